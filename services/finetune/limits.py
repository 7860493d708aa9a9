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
    examples: ExampleLimits = field(default_factory=ExampleLimits)
