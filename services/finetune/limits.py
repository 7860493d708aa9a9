"""The fine-tuning service's limits and settings (queue, uploads, steps, checkpoints, workers, registry)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.finetune.examples import ExampleLimits

__all__ = ["FineTuneLimits"]


@dataclass(frozen=True)
class FineTuneLimits:
    """Service-wide limits and settings."""

    max_concurrent_jobs: int = 1  # two trainings on 2 CPU cores slow each other 10-30x
    max_queued_jobs: int = 16
    max_upload_bytes: int = 64 * 1024 * 1024
    max_total_steps: int = 100_000
    checkpoint_interval_s: float = 30.0
    worker_threads: int = 0  # 0: the CPU count divided by max_concurrent_jobs
    max_attempts: int = 3
    stop_grace_s: float = 5.0
    registry_timeout_s: float = 10.0
    publish_retry_s: float = 180.0
    """How long one attempt keeps retrying to register a stored result while the registry is unreachable; then
    the job is INTERRUPTED (its artifact kept) and queued again after as long again, or at the next start."""
    publish_retry_max_delay_s: float = 30.0
    """The longest pause between two registration retries (they start at 1 s and double)."""
    examples: ExampleLimits = field(default_factory=ExampleLimits)
