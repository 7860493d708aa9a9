"""Dynamic batching: concurrent requests' items grouped into one call of a blocking batch function."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aisemble.errors import AisembleError, InternalError, ResourceExhaustedError, UnavailableError
from aisemble.hosting.backend import RequestContext

__all__ = ["BatchFunction", "BatchStats", "BatchingConfig", "DynamicBatcher"]

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - the item type
O = TypeVar("O")  # noqa: E741 - the output type

#: The blocking function a batcher calls: items in, one output (or an exception) per item, in order.
BatchFunction = Callable[[list[I]], Sequence["O | BaseException"]]


@dataclass(frozen=True)
class BatchingConfig:
    """How a batcher groups items.

    max_batch_size: the most items in one call of the batch function; a request with more items is
        split over several calls (its items stay in order, other requests' items may share a call).
    max_wait_s: how long the oldest waiting item may wait for the batch to fill. The wait only
        applies under load: items were already waiting when the previous call ended, or the previous
        call carried several items and the new one came within max_wait_s of its end (closed-loop
        clients sending their next request). A request that finds the batcher idle otherwise runs at
        once, so an isolated request is never delayed. 0: never wait; the items that queue up while a
        call runs form the next batch.
    max_queued: the most items waiting (not yet in a call); a request that would go past it gets
        RESOURCE_EXHAUSTED at once, never an unbounded wait.
    retry_after_s: the RetryInfo sent with RESOURCE_EXHAUSTED.
    """

    max_batch_size: int = 32
    max_wait_s: float = 0.002
    max_queued: int = 1024
    retry_after_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (got {self.max_batch_size})")
        if not 0 <= self.max_wait_s <= 10:
            raise ValueError(f"max_wait_s must be between 0 and 10 seconds (got {self.max_wait_s})")
        if self.max_queued < self.max_batch_size:
            raise ValueError(f"max_queued ({self.max_queued}) must be >= max_batch_size ({self.max_batch_size})")


@dataclass
class BatchStats:
    """Counters for tests, benchmarks and status pages."""

    calls: int = 0
    items: int = 0
    largest_batch: int = 0
    isolated_retries: int = 0
    sizes: collections.Counter[int] = field(default_factory=collections.Counter)

    @property
    def mean_batch_size(self) -> float:
        """Items per call of the batch function."""
        return self.items / self.calls if self.calls else 0.0


@dataclass
class _Pending(Generic[I, O]):
    item: I
    future: asyncio.Future[O]
    ctx: RequestContext | None
    enqueued_at: float


class DynamicBatcher(Generic[I, O]):
    """Groups the items of concurrent `submit()` calls into calls of one blocking batch function.

    - asyncio side: every item gets a future; one worker task takes up to max_batch_size queued items
      (oldest first) and runs the batch function on a worker thread (never on the event loop), then
      resolves the futures. Items queued while a call runs form the next batch.
    - An item whose request was cancelled or ran past its deadline is dropped before its batch runs.
    - One bad item does not fail its neighbours: the batch function may return an exception for an
      item; and when it raises for the whole batch, every item is retried on its own, so that only the
      item that fails on its own fails.
    - The queue is bounded: `submit()` raises ResourceExhaustedError when the items would not fit.
    """

    def __init__(
        self,
        name: str,
        batch_function: BatchFunction[I, O],
        config: BatchingConfig | None = None,
        executor: Executor | None = None,
        unit: str = "items",
    ) -> None:
        self.name = name
        self.unit = unit  # what an item is called in error messages ("texts", "images")
        self.config = config or BatchingConfig()
        self.stats = BatchStats()
        self._function = batch_function
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"batch-{name}"[:32])
        self._queue: collections.deque[_Pending[I, O]] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None  # set while nothing is queued or running
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queued_at_end = False  # items were waiting when the previous call ended
        self._last_size = 0  # items in the previous call
        self._last_end = 0.0  # time.monotonic() when it ended
        self._closed = False

    @property
    def queued(self) -> int:
        """Items waiting for a call (not counting the call that runs now)."""
        return len(self._queue)

    async def submit(self, items: Sequence[I], ctx: RequestContext | None = None) -> list[O]:
        """Run items through the batch function (together with other callers' items); outputs in order.

        Raises the exception of the first item that failed; the request's other items are withdrawn.
        """
        if not items:
            return []
        if self._closed:
            raise UnavailableError(f"{self.name}: shutting down", reason="SHUTTING_DOWN", retry_after_s=1.0)
        if len(self._queue) + len(items) > self.config.max_queued:
            raise ResourceExhaustedError(
                f"{self.name}: {len(self._queue)} {self.unit} are queued and {len(items)} more would pass the limit "
                f"of {self.config.max_queued}; retry later",
                reason="QUEUE_FULL",
                metadata={"queued": str(len(self._queue)), "limit": str(self.config.max_queued)},
                retry_after_s=self.config.retry_after_s,
            )
        loop = self._start(asyncio.get_running_loop())
        now = time.monotonic()
        pending = [_Pending(item, loop.create_future(), ctx, now) for item in items]
        self._queue.extend(pending)
        assert self._wakeup is not None and self._idle is not None
        self._idle.clear()
        self._wakeup.set()
        try:
            return [await p.future for p in pending]
        finally:
            for p in pending:  # a failed or cancelled request withdraws its items that have not run yet
                if not p.future.done():
                    p.future.cancel()
                elif not p.future.cancelled():
                    p.future.exception()  # marks a second failure of the same request as seen

    async def drain(self) -> None:
        """Refuse new items, let the queued ones run, then close (for a batcher being replaced)."""
        self._closed = True
        if self._idle is not None and self._worker is not None and not self._worker.done():
            await self._idle.wait()
        await self.close()

    async def close(self) -> None:
        """Stop the worker; items still queued fail with UNAVAILABLE. Idempotent."""
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
        while self._queue:
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(UnavailableError(f"{self.name}: shut down", reason="SHUTTING_DOWN"))
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # --- worker ---

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
        if self._loop is not loop or self._worker is None or self._worker.done():
            if self._worker is not None and not self._worker.done() and self._loop is not loop:
                raise InternalError(f"{self.name}: a batcher serves one event loop")
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._idle = asyncio.Event()
            self._worker = loop.create_task(self._work(), name=f"batcher-{self.name}")
        return loop

    async def _work(self) -> None:
        assert self._wakeup is not None and self._idle is not None and self._loop is not None
        while True:
            if not self._queue:
                self._queued_at_end = False
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._fill()
            batch = self._take()
            if not batch:
                continue
            try:
                outputs = await self._loop.run_in_executor(self._executor, self._call, [p.item for p in batch])
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(UnavailableError(f"{self.name}: shut down", reason="SHUTTING_DOWN"))
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. the executor is shut down: fail this batch only
                outputs = [exc] * len(batch)
            self._queued_at_end, self._last_size, self._last_end = bool(self._queue), len(batch), time.monotonic()
            for p, output in zip(batch, outputs, strict=True):
                if p.future.done():  # cancelled while its batch ran
                    continue
                if isinstance(output, BaseException):
                    p.future.set_exception(output)
                else:
                    p.future.set_result(output)

    async def _fill(self) -> None:
        """Let the batch fill: yield once to the loop, then, under load, wait up to max_wait_s."""
        assert self._wakeup is not None
        # RPCs already received run their handlers now and queue their items: costs microseconds.
        await asyncio.sleep(0)
        size, wait = self.config.max_batch_size, self.config.max_wait_s
        if wait <= 0 or not self._queue or len(self._queue) >= size:
            return
        oldest = self._queue[0].enqueued_at
        follows_a_batch = self._last_size > 1 and oldest - self._last_end <= wait
        if not (self._queued_at_end or follows_a_batch):
            return  # an isolated request: no reason to think more are coming
        deadline = oldest + wait
        while self._queue and len(self._queue) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Pending[I, O]]:
        batch: list[_Pending[I, O]] = []
        while self._queue and len(batch) < self.config.max_batch_size:
            p = self._queue.popleft()
            if p.future.done():
                continue
            if p.ctx is not None and p.ctx.is_done():
                try:
                    p.ctx.check()
                except AisembleError as exc:
                    p.future.set_exception(exc)
                continue
            batch.append(p)
        return batch

    def _call(self, items: list[I]) -> Sequence[O | BaseException]:
        """Runs on the worker thread: one call for the batch, or one call per item if the batch call fails."""
        self.stats.calls += 1
        self.stats.items += len(items)
        self.stats.sizes[len(items)] += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(items))
        try:
            outputs = list(self._function(items))
        except Exception as exc:  # noqa: BLE001 - isolated below, or handed to the one caller
            if len(items) == 1:
                return [exc]
            log.info("%s: a batch of %d failed (%s); retrying its items one by one", self.name, len(items), exc)
            self.stats.isolated_retries += 1
            return [self._call_one(item) for item in items]
        if len(outputs) != len(items):
            error = InternalError(f"{self.name}: the batch function returned {len(outputs)} outputs for {len(items)}")
            return [error] * len(items)
        return outputs

    def _call_one(self, item: I) -> O | BaseException:
        try:
            outputs = list(self._function([item]))
        except Exception as exc:  # noqa: BLE001 - this item's own failure
            return exc
        if len(outputs) != 1:
            return InternalError(f"{self.name}: the batch function returned {len(outputs)} outputs for 1")
        return outputs[0]
