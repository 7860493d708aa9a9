"""Continuous batching: one decoding loop steps every running sequence together; new ones join between steps."""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from aisemble.errors import ResourceExhaustedError
from aisemble.hosting.backend import RequestContext
from aisemble.hosting.figures import BATCH_SIZE_BUCKETS, QUEUE_WAIT_BUCKETS, TOKEN_LATENCY_BUCKETS, Buckets
from aisemble.rpc.telemetry import now_ns
from services.llm.prefix_cache import PrefixCache, PrefixHit
from services.llm.sequence import SequenceOutput
from services.llm.structured import OutputConstraint
from services.llm.timeline import Timeline
from services.llm.types import FinishReason, GenerationChunk, GenerationRequest

if TYPE_CHECKING:  # the engine makes its batchers: a type-only import, no cycle at run time
    from services.llm.backends.engine import DecoderEngine

__all__ = ["BatchLimits", "ContinuousBatcher", "Emit", "SchedulerStats"]

#: Where a sequence's chunks go, called on the decoding thread: each chunk as it is ready, or the exception
#: that ended the sequence. It must not block (the runner's hands the item to the event loop).
Emit = Callable[[GenerationChunk | BaseException], None]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchLimits:
    """Bounds of the running batch."""

    max_batch_size: int = 16
    max_waiting: int = 64
    max_tokens_in_flight: int = 32768  # sum over running sequences of prompt + max_output_tokens
    # Padded prompt tokens per prefill call: arrivals beyond it wait a step, and a longer prompt is prefilled
    # in chunks of this size, one between two decoding steps, so the running streams keep their pace.
    max_prefill_tokens: int = 512
    # When the batch is idle, an arrival waits until none has come for gather_gap_s (at most gather_max_s) so
    # that a burst is prefilled in one call: one prompt alone then the rest costs more than all at once.
    gather_gap_s: float = 0.003
    gather_max_s: float = 0.02
    # Caches of finished sequences kept for prefix reuse (0: none); see services/llm/prefix_cache.py.
    prefix_cache_bytes: int = 128 * 2**20


@dataclass
class SchedulerStats:
    """Counters the runner and benchmarks read."""

    steps: int = 0
    batched_tokens: int = 0
    max_batch_seen: int = 0
    prefills: int = 0
    prefill_chunks: int = 0  # chunks of long prompts
    max_prefill_seen: int = 0  # most prompts prefilled in one call
    time_to_first_token: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=512))
    first_tokens: int = 0  # all time, with their total seconds (Prometheus summary)
    first_token_seconds: float = 0.0
    prefix_hits: int = 0  # prompts that started from a cached prefix, and the tokens it saved
    prefix_tokens_reused: int = 0
    # Histograms for Prometheus: decode batch sizes, queue waits (submit to prefill), first-token times.
    batch_sizes: Buckets = field(default_factory=lambda: Buckets(BATCH_SIZE_BUCKETS))
    queue_waits: Buckets = field(default_factory=lambda: Buckets(QUEUE_WAIT_BUCKETS))
    first_token_times: Buckets = field(default_factory=lambda: Buckets(TOKEN_LATENCY_BUCKETS))


@dataclass
class _Sequence:
    request: GenerationRequest
    ctx: RequestContext
    input_ids: list[int]
    emit: Emit
    output: SequenceOutput
    enqueued_at: float
    adapter: int | None = None  # the LoRA adapter of the engine this sequence runs (None: the base)
    cache_length: int = 0  # true (unpadded) length of this sequence's cache
    first_token_seen: bool = False
    partial_kv: Any = None  # the cache of a long prompt while it is prefilled chunk by chunk
    timeline: Timeline | None = None  # while the call is traced: when each step happened, for its spans

    @property
    def budget(self) -> int:
        return len(self.input_ids) + self.request.sampling.max_output_tokens


class ContinuousBatcher:
    """Owns one model's decoding thread. `stream()` submits a sequence and yields its chunks.

    Each iteration: admit the waiting sequences (one prefill for all of them, left-padded, up to
    max_prefill_tokens; each emits its first token and joins the batch), prefill one chunk of a long
    prompt if one is in progress, then one decode step for the whole batch; finished or cancelled
    sequences leave at once.
    A sequence's output is what it would be alone: its own sampler, seed, stop sequences.
    """

    def __init__(self, model: DecoderEngine, limits: BatchLimits | None = None) -> None:
        self.model = model
        self.limits = limits or BatchLimits()
        self.stats = SchedulerStats()
        self.prefix_cache = PrefixCache(self.limits.prefix_cache_bytes, model.kv_bytes)
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: list[_Sequence] = []
        self._prefilling: _Sequence | None = None  # a long prompt, prefilled a chunk per iteration
        self._kv: Any = None
        self._kv_length = 0  # padded length of the batch cache
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def running(self) -> int:
        """Sequences in the batch now."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Sequences waiting to join (a long prompt being prefilled counts as waiting)."""
        return len(self._waiting) + (self._prefilling is not None)

    def submit(
        self,
        request: GenerationRequest,
        ctx: RequestContext,
        input_ids: list[int],
        emit: Emit,
        adapter: int | None = None,
        constraint: OutputConstraint | None = None,
    ) -> None:
        """Queue one sequence; its chunks go to `emit` as the loop produces them, the last one with its finish
        reason (CANCELLED once `ctx` is done). RESOURCE_EXHAUSTED (BATCH_QUEUE_FULL) when too many wait: this
        is the only admission a batched generation passes."""
        sequence = _Sequence(
            request=request,
            ctx=ctx,
            input_ids=input_ids,
            emit=emit,
            output=SequenceOutput(
                request.sampling, self.model.tokenizer, self.model.eos_token_ids, len(input_ids), constraint
            ),
            enqueued_at=time.perf_counter(),
            adapter=adapter,
            timeline=None if ctx.trace is None else Timeline(ctx.trace, now_ns()),
        )
        with self._condition:
            free_slots = self.limits.max_batch_size - len(self._running) - (self._prefilling is not None)
            queued = len(self._waiting) - max(free_slots, 0)  # those a free slot will not take at the next step
            if queued >= self.limits.max_waiting:
                raise ResourceExhaustedError(
                    f"{queued} generations are waiting for a batch slot (limit {self.limits.max_waiting})",
                    reason="BATCH_QUEUE_FULL",
                    retry_after_s=1.0,
                )
            self._waiting.append(sequence)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="llm-batcher", daemon=True)
                self._thread.start()
            self._condition.notify()

    def stream(
        self,
        request: GenerationRequest,
        ctx: RequestContext,
        input_ids: list[int],
        adapter: int | None = None,
        constraint: OutputConstraint | None = None,
    ) -> Iterator[GenerationChunk]:
        """Submit one sequence and yield its chunks as the loop produces them (blocking: for callers off the
        event loop)."""
        out: queue.SimpleQueue[GenerationChunk | BaseException] = queue.SimpleQueue()
        self.submit(request, ctx, input_ids, out.put, adapter, constraint)
        while True:
            item = out.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish_reason is not None:
                return

    def close(self) -> None:
        """Stop the loop; waiting and running sequences end as cancelled."""
        with self._condition:
            self._closed = True
            self._condition.notify()

    # --- the loop (one thread) ---
    def _loop(self) -> None:
        self.model.prepare_thread()
        while True:
            with self._condition:
                while not (self._waiting or self._running or self._prefilling or self._closed):
                    self._condition.wait()
                if not self._running and self._prefilling is None:
                    self._gather()
                if self._closed:
                    self._cancel_all()
                    return
                admitted = self._take_admissible()
            try:
                # Arrivals go first (their first token is the latency users feel); those that came during a
                # prefill are prefilled before the next step too, a bounded number of times.
                for _ in range(self.limits.max_batch_size):
                    if not admitted:
                        break
                    self._admit(admitted)
                    with self._condition:
                        admitted = self._take_admissible()
                if self._prefilling is not None:
                    self._prefill_chunk(self._prefilling)
                if self._running:
                    self._step()
            except Exception as exc:
                log.exception("the batch decoding step failed")
                failed = [*admitted, *self._running, *([self._prefilling] if self._prefilling else [])]
                for sequence in {id(s): s for s in failed}.values():
                    sequence.emit(exc)
                self._running, self._kv, self._kv_length, self._prefilling = [], None, 0, None

    def _cancel_all(self) -> None:
        for sequence in [*self._waiting, *self._running, *([self._prefilling] if self._prefilling else [])]:
            self._finish(sequence, FinishReason.CANCELLED)
        self._waiting.clear()
        self._running.clear()
        self._prefilling = None

    def _gather(self) -> None:
        """Wait (lock held, released while waiting) for a burst of arrivals to end; see BatchLimits.gather_*."""
        limits = self.limits
        deadline = time.monotonic() + limits.gather_max_s
        while not self._closed and len(self._waiting) < limits.max_batch_size:
            seen = len(self._waiting)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._condition.wait(min(limits.gather_gap_s, remaining))
            if len(self._waiting) == seen:
                return

    def _take_admissible(self) -> list[_Sequence]:
        """The waiting sequences that join at this step, first come first served (caller holds the lock).

        A prompt longer than max_prefill_tokens takes the chunked-prefill lane when it is free (and
        waits for it otherwise, letting shorter ones behind it go first).
        """
        limits = self.limits
        taken: list[_Sequence] = []
        in_flight = sum(s.budget for s in self._running)
        occupied = len(self._running)
        if self._prefilling is not None:
            in_flight += self._prefilling.budget
            occupied += 1
        longest, index = 0, 0
        while index < len(self._waiting) and occupied + len(taken) < limits.max_batch_size:
            candidate = self._waiting[index]
            # The first sequence is always admitted, whatever its size; later ones must fit the budgets.
            if (occupied or taken) and in_flight + candidate.budget > limits.max_tokens_in_flight:
                break
            length = len(candidate.input_ids)
            if length > limits.max_prefill_tokens:
                if self._prefilling is not None:
                    index += 1
                    continue
                del self._waiting[index]
                self._prefilling = candidate
                occupied += 1
                in_flight += candidate.budget
                continue
            if taken and (len(taken) + 1) * max(longest, length) > limits.max_prefill_tokens:
                break
            del self._waiting[index]
            taken.append(candidate)
            in_flight += candidate.budget
            longest = max(longest, length)
        return taken

    def _admit(self, arrivals: list[_Sequence]) -> None:
        """Prefill the arrivals (in one call; one that starts with a cached prefix runs only the rest of its
        prompt), emit each one's first token, and join them to the batch."""
        arrivals = [s for s in arrivals if not self._finish_if_cancelled(s)]
        fresh: list[_Sequence] = []
        for sequence in arrivals:
            hit = self.prefix_cache.lookup(sequence.adapter, sequence.input_ids)
            if hit is None:
                fresh.append(sequence)
                continue
            started = self._admitted([sequence])
            try:
                logits, kv = self._extend_from(sequence, hit)
            except Exception as exc:  # this arrival fails; the others and the running batch are untouched
                log.exception("prefilling after a cached prefix failed")
                sequence.emit(exc)
                continue
            if sequence.timeline is not None:
                sequence.timeline.prefilled(started, now_ns(), 1, hit.length)
            self._join([sequence], logits[None, :], kv)
        if not fresh:
            return
        started = self._admitted(fresh)
        try:
            logits, kv = self.model.prefill([s.input_ids for s in fresh], [s.adapter for s in fresh])
        except Exception as exc:  # the arrivals fail; the running batch is untouched
            log.exception("prefilling %d arrivals failed", len(fresh))
            for sequence in fresh:
                sequence.emit(exc)
            return
        ended = now_ns()
        for sequence in fresh:
            if sequence.timeline is not None:
                sequence.timeline.prefilled(started, ended, len(fresh))
        self.stats.prefills += 1
        self.stats.max_prefill_seen = max(self.stats.max_prefill_seen, len(fresh))
        for sequence in fresh:
            sequence.cache_length = len(sequence.input_ids)
        self._join(fresh, logits, kv)

    def _admitted(self, sequences: list[_Sequence]) -> int:
        """Sequences leave the queue for their prefill: their wait is counted; returns the time (for spans)."""
        now = time.perf_counter()
        for sequence in sequences:
            self.stats.queue_waits.observe(now - sequence.enqueued_at)
        return now_ns()

    def _extend_from(self, sequence: _Sequence, hit: PrefixHit) -> tuple[np.ndarray, Any]:
        """Run the rest of a prompt after its cached prefix (a copy of it: the cache entry stays as it is)."""
        kv = self.model.kv_copy(hit.kv, 0, 0, hit.length)
        logits, kv = self.model.forward(sequence.input_ids[hit.length :], kv, hit.length, sequence.adapter)
        sequence.cache_length = len(sequence.input_ids)
        self.stats.prefix_hits += 1
        self.stats.prefix_tokens_reused += hit.length
        return logits, kv

    def _prefill_chunk(self, sequence: _Sequence) -> None:
        """The next chunk of a long prompt; when it is the last, the sequence joins the batch."""
        if self._finish_if_cancelled(sequence):
            self._prefilling = sequence.partial_kv = None
            return
        started = now_ns()
        if sequence.partial_kv is None:  # the first chunk: start after a cached prefix if there is one
            self._admitted([sequence])
            hit = self.prefix_cache.lookup(sequence.adapter, sequence.input_ids)
            if hit is not None:
                sequence.partial_kv = self.model.kv_copy(hit.kv, 0, 0, hit.length)
                sequence.cache_length = hit.length
                self.stats.prefix_hits += 1
                self.stats.prefix_tokens_reused += hit.length
        start = sequence.cache_length
        chunk = sequence.input_ids[start : start + self.limits.max_prefill_tokens]
        try:
            logits, sequence.partial_kv = self.model.forward(chunk, sequence.partial_kv, start, sequence.adapter)
        except Exception as exc:  # this sequence fails; the running batch is untouched
            log.exception("prefilling a chunk of a long prompt failed")
            self._prefilling = sequence.partial_kv = None
            sequence.emit(exc)
            return
        sequence.cache_length += len(chunk)
        self.stats.prefill_chunks += 1
        if sequence.timeline is not None:
            sequence.timeline.prefilled(started, now_ns(), 1)
        if sequence.cache_length < len(sequence.input_ids):
            return
        kv, sequence.partial_kv = sequence.partial_kv, None
        self._prefilling = None
        self._join([sequence], logits[None, :], kv)

    def _join(self, arrivals: list[_Sequence], logits: np.ndarray, kv: Any) -> None:
        """Add prefilled sequences (their cache left-padded to the longest) to the batch; each takes its first
        token."""
        longest = max(s.cache_length for s in arrivals)
        first_row = len(self._running)
        self._kv = self.model.kv_join(self._kv, self._kv_length, kv, longest)
        self._kv_length = max(self._kv_length, longest)
        self._running.extend(arrivals)
        self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(self._running))
        finished = [first_row + i for i, s in enumerate(arrivals) if self._take_token(s, logits[i])]
        self._remove(finished)

    def _finish_if_cancelled(self, sequence: _Sequence) -> bool:
        if not sequence.ctx.is_done():
            return False
        self._finish(sequence, FinishReason.CANCELLED)
        return True

    def _take_token(self, sequence: _Sequence, logits: np.ndarray) -> bool:
        """Sample the next token of a sequence and emit its text; True when the sequence is finished."""
        if self._finish_if_cancelled(sequence):
            return True
        if not sequence.first_token_seen:
            sequence.first_token_seen = True
            waited = time.perf_counter() - sequence.enqueued_at
            self.stats.time_to_first_token.append(waited)
            self.stats.first_token_times.observe(waited)
            self.stats.first_tokens += 1
            self.stats.first_token_seconds += waited
        chunk = sequence.output.accept(logits)
        finished = sequence.output.finish_reason
        if finished is not None:
            self._record_timeline(sequence, finished)
        if chunk is not None:
            sequence.emit(chunk)
        return finished is not None

    def _finish(self, sequence: _Sequence, reason: FinishReason) -> None:
        last = sequence.output.finish(reason)
        self._record_timeline(sequence, sequence.output.finish_reason or reason)
        sequence.emit(last)

    @staticmethod
    def _record_timeline(sequence: _Sequence, reason: FinishReason) -> None:
        """A traced sequence's spans, recorded before its last chunk goes out: the caller's trace is whole by
        the time the caller has the reply."""
        if sequence.timeline is not None:
            sequence.timeline.record(len(sequence.input_ids), sequence.output.output_tokens, reason)
            sequence.timeline = None

    def _step(self) -> None:
        running = self._running
        length = self._kv_length
        mask = np.zeros((len(running), length + 1), dtype=np.int64)
        for row, sequence in enumerate(running):
            mask[row, length - sequence.cache_length :] = 1
        logits, kv = self.model.decode_batch(
            [s.output.last_token for s in running],
            [s.cache_length for s in running],
            mask,
            self._kv,
            [s.adapter for s in running],
        )
        self.stats.steps += 1
        self.stats.batched_tokens += len(running)
        self.stats.batch_sizes.observe(len(running))
        self._kv, self._kv_length = kv, length + 1
        finished: list[int] = []
        for row, sequence in enumerate(running):
            sequence.cache_length += 1
            if self._take_token(sequence, logits[row]):
                finished.append(row)
        self._remove(finished)

    def _remove(self, rows: list[int]) -> None:
        """Take finished sequences (batch rows) out of the batch and its cache."""
        if not rows:
            return
        for row in rows:
            self._keep_prefix(row)
        gone = set(rows)
        keep = [row for row in range(len(self._running)) if row not in gone]
        if not keep:
            self._running, self._kv, self._kv_length = [], None, 0
            return
        survivors = [self._running[row] for row in keep]
        longest = max(s.cache_length for s in survivors)
        trim = self._kv_length - longest  # columns that are padding for every survivor
        self._kv = self.model.kv_select(self._kv, keep, trim)
        self._kv_length = longest
        self._running = survivors

    def _keep_prefix(self, row: int) -> None:
        """Put a finished row's cache (its prompt and the answer tokens it was fed) in the prefix cache."""
        sequence = self._running[row]
        if not self.prefix_cache.enabled or sequence.cache_length < self.prefix_cache.min_tokens:
            return
        tokens = [*sequence.input_ids, *sequence.output.token_ids][: sequence.cache_length]
        try:
            kv = self.model.kv_copy(self._kv, row, self._kv_length - sequence.cache_length, self._kv_length)
        except Exception:  # the cache is an optimisation: a failed copy loses nothing
            log.exception("keeping a finished sequence's cache for prefix reuse failed")
            return
        self.prefix_cache.store(sequence.adapter, tokens, kv)
