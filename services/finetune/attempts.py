"""One attempt at a job in this service process: its task, its worker process, its phase, what was asked of it."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from dataclasses import dataclass, field
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
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set with shutdown_requested: wakes a pause (between registration retries) at once."""

    def request_shutdown(self) -> None:
        """The service is stopping: mark the attempt and wake it if it is pausing."""
        self.shutdown_requested = True
        self.stopping.set()

    async def pause(self, seconds: float) -> bool:
        """Wait this long, or less when the service stops; True when it is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.shutdown_requested
