"""Admission control: at most N requests run, at most M wait, the rest get RESOURCE_EXHAUSTED at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aisemble.errors import ResourceExhaustedError

__all__ = ["AdmissionControl"]


class AdmissionControl:
    """A bounded semaphore with a bounded waiting room (no unbounded queues anywhere)."""

    def __init__(self, name: str, max_active: int, max_waiting: int, retry_after_s: float = 1.0) -> None:
        if max_active < 1 or max_waiting < 0:
            raise ValueError("max_active must be >= 1 and max_waiting >= 0")
        self.name = name
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self.active = 0
        self.waiting = 0
        self._semaphore = asyncio.Semaphore(max_active)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the active slots for the duration of the block."""
        if self._semaphore.locked():
            if self.waiting >= self.max_waiting:
                raise ResourceExhaustedError(
                    f"{self.name}: {self.active} requests running and {self.waiting} waiting "
                    f"(limits {self.max_active} and {self.max_waiting}); retry later",
                    reason="TOO_MANY_REQUESTS",
                    metadata={"limit": str(self.max_active), "waiting_limit": str(self.max_waiting)},
                    retry_after_s=self.retry_after_s,
                )
            self.waiting += 1
            try:
                await self._semaphore.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._semaphore.acquire()
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self._semaphore.release()
