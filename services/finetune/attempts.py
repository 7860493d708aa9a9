"""One attempt at a job in this service process: its task, its worker process, its phase, what was asked of it."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["Attempt", "Phase"]


class Phase(enum.Enum):
    """Where a running job is (once REGISTERING, it can no longer be cancelled)."""

    TRAINING = "training"
    PUBLISHING = "publishing"
    REGISTERING = "registering"


@dataclass
class Attempt:
    """A job this process is running: from scheduling until its outcome is recorded."""

    job_id: str
    task: asyncio.Task[None] | None = None
    process: Any = None
    """The worker process while one runs (a multiprocessing Process)."""
    phase: Phase = Phase.TRAINING
    cancel_requested: bool = False
    shutdown_requested: bool = False
    """The service is stopping: the job is to be INTERRUPTED, to resume at the next start."""
