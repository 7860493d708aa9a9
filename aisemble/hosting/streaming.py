"""Bridges a backend's blocking generator to an async iterator, with backpressure and cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import TypeVar

from aisemble.hosting.backend import RequestContext

__all__ = ["iterate_in_thread"]

T = TypeVar("T")
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
