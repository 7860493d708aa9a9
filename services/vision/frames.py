"""A stream of frames through one model with bounded memory: pending frames, a backpressure policy, ordered results."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from aisemble.inputs.images import ImageInput

__all__ = ["BackpressurePolicy", "Frame", "FrameOutcome", "run_frames"]

R = TypeVar("R")


class BackpressurePolicy(enum.Enum):
    """What to do with a frame that arrives while `max_pending` frames already wait for the model."""

    BLOCK = "block"  # stop reading: transport flow control slows the sender; nothing is dropped
    DROP_OLDEST = "drop_oldest"  # drop the oldest waiting frame (live video: keep the newest)
    DROP_NEWEST = "drop_newest"  # drop the frame that just arrived


@dataclass(frozen=True)
class Frame:
    """One received frame and the client's number for it."""

    index: int
    image: ImageInput


@dataclass(frozen=True)
class FrameOutcome(Generic[R]):
    """The answer to one frame: its result, or dropped (result None) by the backpressure policy."""

    index: int
    result: R | None

    @property
    def dropped(self) -> bool:
        """True when the frame was skipped and not run."""
        return self.result is None


class _End:
    pass


@dataclass(frozen=True)
class _Failure:
    error: BaseException


async def run_frames(
    frames: AsyncIterator[Frame],
    process: Callable[[Frame], Awaitable[R]],
    policy: BackpressurePolicy,
    max_pending: int,
    max_unsent: int = 16,
) -> AsyncIterator[FrameOutcome[R]]:
    """Read `frames` concurrently with processing them one at a time; yield one outcome per frame.

    Memory stays bounded: at most `max_pending` frames wait for the model, one is in the model, and at
    most `max_unsent` outcomes wait for the caller to take them (when that many wait, reading stops too,
    whatever the policy: a client that sends without reading is slowed down, not buffered).
    Processed frames come out in arrival order; a dropped frame's outcome comes out when it is dropped.
    An exception from `frames` or `process` ends the iteration with that exception; leaving early
    cancels the reading and the processing (which stops the model at its next step).
    """
    if max_pending < 1 or max_unsent < 1:
        raise ValueError("max_pending and max_unsent must be >= 1")
    pending: deque[Frame] = deque()
    changed = asyncio.Condition()
    unsent = asyncio.Semaphore(max_unsent)
    out: asyncio.Queue[FrameOutcome[R] | _End | _Failure] = asyncio.Queue()
    reading_done = False

    async def emit(outcome: FrameOutcome[R]) -> None:
        await unsent.acquire()
        out.put_nowait(outcome)

    async def read() -> None:
        nonlocal reading_done
        try:
            async for frame in frames:
                dropped: Frame | None = None
                async with changed:
                    if len(pending) >= max_pending:
                        if policy is BackpressurePolicy.BLOCK:
                            await changed.wait_for(lambda: len(pending) < max_pending)
                        elif policy is BackpressurePolicy.DROP_OLDEST:
                            dropped = pending.popleft()
                        else:
                            dropped = frame
                    if dropped is not frame:
                        pending.append(frame)
                        changed.notify_all()
                if dropped is not None:
                    await emit(FrameOutcome(dropped.index, None))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            out.put_nowait(_Failure(exc))
        finally:
            async with changed:
                reading_done = True
                changed.notify_all()

    async def work() -> None:
        try:
            while True:
                async with changed:
                    await changed.wait_for(lambda: bool(pending) or reading_done)
                    if not pending:
                        break
                    frame = pending.popleft()
                    changed.notify_all()
                result = await process(frame)
                await emit(FrameOutcome(frame.index, result))
            out.put_nowait(_End())
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            out.put_nowait(_Failure(exc))

    reader = asyncio.create_task(read(), name="frames-read")
    worker = asyncio.create_task(work(), name="frames-work")
    try:
        while True:
            item = await out.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failure):
                raise item.error
            unsent.release()
            yield item
    finally:
        for task in (reader, worker):
            task.cancel()
        for task in (reader, worker):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
