"""Streams with backpressure and cancellation: a backend's blocking generator as an async iterator, and a
stream of batches processed concurrently with its results kept in order."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor
from typing import TypeVar

from aisemble.hosting.backend import RequestContext

__all__ = ["in_order", "iterate_in_thread"]

T = TypeVar("T")
B = TypeVar("B")
_DONE = object()


async def iterate_in_thread(
    produce: Callable[[], Iterator[T]],
    ctx: RequestContext,
    executor: Executor | None = None,
    max_buffered: int = 16,
) -> AsyncIterator[T]:
    """Run `produce()` in a worker thread and yield its items on the event loop as they come.

    - The producer blocks when `max_buffered` items wait unread (a slow reader slows the model,
      memory stays bounded).
    - When the consumer stops early (client cancelled, deadline, error), `ctx.cancelled` is set:
      the backend sees it at its next step and returns, and the worker thread is released.
    - An exception in the producer is re-raised here, in the consumer.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    slots = threading.Semaphore(max_buffered)

    def put(item: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            for item in produce():
                while not slots.acquire(timeout=0.05):
                    if ctx.cancelled.is_set():
                        return
                put(item)
                if ctx.cancelled.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_Failure(exc))
        finally:
            put(_DONE)

    future = loop.run_in_executor(executor, work)
    finished = False
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                finished = True
                break
            if isinstance(item, _Failure):
                finished = True
                raise item.exc
            slots.release()
            yield item  # type: ignore[misc]
    finally:
        if not finished:
            ctx.cancelled.set()
        # The worker stops at its next step; wait for it so its thread and memory are free when we return.
        await asyncio.shield(future)


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def in_order(
    batches: AsyncIterator[B],
    process: Callable[[B], Awaitable[T]],
    weight: Callable[[B], int],
    max_inflight: int,
) -> AsyncIterator[T]:
    """Process a stream's batches concurrently and yield their results in the order the batches came.

    - At most `max_inflight` units (`weight(batch)`, e.g. texts) are held at once, counted from when a batch is
      taken until its result has been taken by the consumer; a batch heavier than that runs alone. The reader
      waits for room before it takes the next batch, so a consumer that stops taking results stops the reading
      (and gRPC's flow control then stops the writer): memory stays bounded both ways.
    - An exception raised by `batches` (a bad message) comes out in its place, after the results of the batches
      before it; an exception of `process`, when that batch's result is due.
    - When the consumer stops (done, failed, cancelled), the batches in flight are cancelled and the reader stops.
    """
    held = 0
    room = asyncio.Condition()
    queue: asyncio.Queue[tuple[asyncio.Future[T], int] | _Failure | None] = asyncio.Queue()

    async def read() -> None:
        nonlocal held
        try:
            async for batch in batches:
                units = min(max(weight(batch), 1), max_inflight)
                async with room:
                    while held + units > max_inflight:
                        await room.wait()
                    held += units
                queue.put_nowait((asyncio.ensure_future(process(batch)), units))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, in order
            queue.put_nowait(_Failure(exc))
        else:
            queue.put_nowait(None)

    reader = asyncio.create_task(read())
    try:
        while True:
            entry = await queue.get()
            if entry is None:
                return
            if isinstance(entry, _Failure):
                raise entry.exc
            future, units = entry
            result = await future
            yield result
            async with room:
                held -= units
                room.notify_all()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        while not queue.empty():
            entry = queue.get_nowait()
            if isinstance(entry, tuple):
                entry[0].cancel()
