"""The dynamic batcher's logic with fake batch functions (no model, no sockets)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from aisemble.errors import (
    CancelledError,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)
from aisemble.hosting.backend import RequestContext
from aisemble.hosting.batching import BatchingConfig, DynamicBatcher


class Recorder:
    """A batch function that doubles numbers, records each call, and can be held to let a queue build up."""

    def __init__(self, fail_on: set[int] = frozenset(), error_for: set[int] = frozenset()) -> None:
        self.calls: list[list[int]] = []
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on  # any of these in a batch: the whole call raises
        self.error_for = error_for  # these items get an exception as their output

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.entered.set()
        self.gate.wait(5)
        self.calls.append(list(items))
        self.threads.add(threading.get_ident())
        if self.fail_on & set(items):
            raise ValueError(f"cannot process {sorted(self.fail_on & set(items))}")
        return [InvalidArgumentError(f"bad item {i}") if i in self.error_for else i * 2 for i in items]


async def _hold_first_call(batcher: DynamicBatcher, recorder: Recorder, item: int = 0) -> asyncio.Task:
    """Start a call with one item and keep it running, so that what comes next queues up."""
    recorder.gate.clear()
    recorder.entered.clear()
    first = asyncio.create_task(batcher.submit([item]))
    await asyncio.to_thread(recorder.entered.wait, 5)
    return first


async def test_concurrent_requests_share_one_call_and_get_their_own_results():
    recorder = Recorder()
    batcher = DynamicBatcher("t", recorder, BatchingConfig(max_batch_size=8, max_wait_s=0))
    first = await _hold_first_call(batcher, recorder)
    others = [asyncio.create_task(batcher.submit([i, i + 100])) for i in range(1, 4)]
    await asyncio.sleep(0.05)
    assert batcher.queued == 6
    recorder.gate.set()
    assert await first == [0]
    assert [await t for t in others] == [[2, 202], [4, 204], [6, 206]]
    assert recorder.calls == [[0], [1, 101, 2, 102, 3, 103]]
    assert batcher.stats.calls == 2 and batcher.stats.largest_batch == 6
    await batcher.close()


async def test_a_request_with_many_items_is_chunked_in_order():
    recorder = Recorder()
    batcher = DynamicBatcher("t", recorder, BatchingConfig(max_batch_size=4, max_wait_s=0))
    items = list(range(10))
    assert await batcher.submit(items) == [i * 2 for i in items]
    assert [len(c) for c in recorder.calls] == [4, 4, 2]
    assert [i for call in recorder.calls for i in call] == items
    await batcher.close()


async def test_the_batch_function_runs_off_the_event_loop_thread():
    recorder = Recorder()
    batcher = DynamicBatcher("t", recorder)
    await batcher.submit([1, 2])
    assert threading.get_ident() not in recorder.threads
    await batcher.close()


async def test_an_item_that_breaks_the_call_fails_alone():
    recorder = Recorder(fail_on={13})
    batcher = DynamicBatcher("t", recorder, BatchingConfig(max_batch_size=8, max_wait_s=0))
    first = await _hold_first_call(batcher, recorder)
    good = asyncio.create_task(batcher.submit([1, 2]))
    bad = asyncio.create_task(batcher.submit([3, 13]))
    also_good = asyncio.create_task(batcher.submit([4]))
    await asyncio.sleep(0.05)
    recorder.gate.set()
    await first
    assert await good == [2, 4]
    assert await also_good == [8]
    with pytest.raises(ValueError, match="13"):
        await bad
    # The shared call failed, then each item was retried on its own.
    assert recorder.calls[1] == [1, 2, 3, 13, 4]
    assert batcher.stats.isolated_retries == 1
    await batcher.close()


async def test_an_exception_returned_for_one_item_fails_only_its_request():
    recorder = Recorder(error_for={7})
    batcher = DynamicBatcher("t", recorder, BatchingConfig(max_batch_size=8, max_wait_s=0))
    first = await _hold_first_call(batcher, recorder)
    good = asyncio.create_task(batcher.submit([1]))
    bad = asyncio.create_task(batcher.submit([7, 8]))
    await asyncio.sleep(0.05)
    recorder.gate.set()
    await first
    assert await good == [2]
    with pytest.raises(InvalidArgumentError, match="bad item 7"):
        await bad
    assert recorder.calls[1] == [1, 7, 8]  # one call: no retries needed
    await batcher.close()


async def test_a_full_queue_answers_resource_exhausted_at_once():
    recorder = Recorder()
    batcher = DynamicBatcher("t", recorder, BatchingConfig(max_batch_size=2, max_wait_s=0, max_queued=4))
    first = await _hold_first_call(batcher, recorder)
    queued = asyncio.create_task(batcher.submit([1, 2, 3]))
    await asyncio.sleep(0.02)
    started = time.monotonic()
    with pytest.raises(ResourceExhaustedError) as caught:
        await batcher.submit([4, 5])
    assert time.monotonic() - started < 0.1
    assert caught.value.retry_after_s is not None and caught.value.reason == "QUEUE_FULL"
    assert await batcher.submit([]) == []
    recorder.gate.set()
    await first
    assert await queued == [2, 4, 6]
    assert await batcher.submit([4, 5]) == [8, 10]  # room again
    await batcher.close()


async def test_a_cancelled_request_withdraws_its_queued_items():
    recorder = Recorder()
    batcher = DynamicBatcher("t", recorder, BatchingConfig(max_batch_size=8, max_wait_s=0))
    first = await _hold_first_call(batcher, recorder)
    doomed = asyncio.create_task(batcher.submit([50, 51]))
    kept = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0.02)
    doomed.cancel()
    await asyncio.sleep(0)
    recorder.gate.set()
    await first
    assert await kept == [2]
    assert recorder.calls == [[0], [1]]
    await batcher.close()


async def test_items_past_their_deadline_or_cancelled_are_dropped_before_the_call():
    recorder = Recorder()
    batcher = DynamicBatcher("t", recorder, BatchingConfig(max_batch_size=8, max_wait_s=0))
    first = await _hold_first_call(batcher, recorder)
    expired = asyncio.create_task(batcher.submit([60], RequestContext(deadline=time.monotonic() + 0.01)))
    gone_ctx = RequestContext()
    gone = asyncio.create_task(batcher.submit([61], gone_ctx))
    kept = asyncio.create_task(batcher.submit([2], RequestContext(deadline=time.monotonic() + 30)))
    await asyncio.sleep(0.05)
    gone_ctx.cancelled.set()
    recorder.gate.set()
    await first
    assert await kept == [4]
    with pytest.raises(DeadlineExceededError):
        await expired
    with pytest.raises(CancelledError):
        await gone
    assert recorder.calls == [[0], [2]]
    await batcher.close()


async def test_an_isolated_request_is_not_delayed_by_max_wait():
    recorder = Recorder()
    batcher = DynamicBatcher("t", recorder, BatchingConfig(max_batch_size=32, max_wait_s=2.0))
    started = time.monotonic()
    for i in range(3):
        assert await batcher.submit([i]) == [i * 2]
    assert time.monotonic() - started < 0.5
    await batcher.close()


async def test_under_load_a_young_batch_waits_to_fill():
    recorder = Recorder()
    batcher = DynamicBatcher("t", recorder, BatchingConfig(max_batch_size=4, max_wait_s=0.3))
    first = await _hold_first_call(batcher, recorder)
    waiting = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0.02)
    recorder.gate.set()  # the call ends with an item waiting: the batcher is under load
    await first
    await asyncio.sleep(0.05)  # still inside max_wait of item 1: these join its batch
    late = [asyncio.create_task(batcher.submit([i])) for i in (2, 3, 4)]
    assert [await t for t in (waiting, *late)] == [[2], [4], [6], [8]]
    assert recorder.calls == [[0], [1, 2, 3, 4]]
    await batcher.close()


async def test_right_after_a_full_call_the_next_batch_waits_for_the_senders_to_come_back():
    recorder = Recorder()
    batcher = DynamicBatcher("t", recorder, BatchingConfig(max_batch_size=4, max_wait_s=0.3))
    assert await batcher.submit([1, 2, 3]) == [2, 4, 6]  # a call with several items has just ended
    first = asyncio.create_task(batcher.submit([4]))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batcher.submit([i])) for i in (5, 6, 7)]
    assert [await t for t in (first, *rest)] == [[8], [10], [12], [14]]
    assert recorder.calls == [[1, 2, 3], [4, 5, 6, 7]]
    # After a quiet spell longer than max_wait, a request is isolated again: it runs at once.
    await asyncio.sleep(0.35)
    started = time.monotonic()
    assert await batcher.submit([9]) == [18]
    assert time.monotonic() - started < 0.2
    await batcher.close()


async def test_a_wrong_number_of_outputs_is_an_internal_error():
    batcher = DynamicBatcher("t", lambda items: items[:-1], BatchingConfig(max_wait_s=0))
    with pytest.raises(InternalError, match="returned 1 outputs for 2"):
        await batcher.submit([1, 2])
    await batcher.close()


async def test_close_fails_queued_items_and_refuses_new_ones():
    recorder = Recorder()
    batcher = DynamicBatcher("t", recorder, BatchingConfig(max_batch_size=1, max_wait_s=0))
    first = await _hold_first_call(batcher, recorder)
    queued = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0.02)
    await batcher.close()
    recorder.gate.set()
    for task in (first, queued):
        with pytest.raises(UnavailableError):
            await task
    with pytest.raises(UnavailableError):
        await batcher.submit([2])


@pytest.mark.parametrize(
    "fields",
    [{"max_batch_size": 0}, {"max_wait_s": -1}, {"max_batch_size": 8, "max_queued": 4}],
)
def test_config_is_checked(fields):
    with pytest.raises(ValueError):
        BatchingConfig(**fields)
