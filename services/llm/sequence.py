"""One sequence's output processor: sampling, end-of-sequence, UTF-8-safe detokenising, stop strings, usage."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from services.llm.detokenizer import IncrementalDetokenizer
from services.llm.sampling import Sampler
from services.llm.stopping import StopSequenceFilter
from services.llm.structured import OutputConstraint
from services.llm.types import FinishReason, GenerationChunk, SamplingParams

__all__ = ["SequenceOutput"]


class SequenceOutput:
    """Turns one sequence's next-token logits into its output chunks; the batched and the unbatched
    decoding loops both feed it, so a sequence's output does not depend on which loop ran it.

    `accept(logits)` picks the token (the request's own sampler and seed; with an output format, among the
    tokens its grammar allows), ends the sequence at an end-of-sequence token, a stop string, a complete
    format or max_output_tokens, and returns the chunk to send, if any:
    text is held back while it may be the start of a stop string or of a multi-byte character. The
    chunk that ends the sequence has the finish reason and the token counts.
    """

    def __init__(
        self,
        sampling: SamplingParams,
        tokenizer: Any,
        eos_token_ids: Iterable[int],
        prompt_tokens: int,
        constraint: OutputConstraint | None = None,
    ) -> None:
        self.sampling = sampling
        self.constraint = constraint
        self.prompt_tokens = prompt_tokens
        self.output_tokens = 0
        self.token_ids: list[int] = []  # the tokens generated so far
        self.last_token = -1
        self.finish_reason: FinishReason | None = None
        self._eos = frozenset(eos_token_ids)
        self._sampler = Sampler(sampling, self._eos)
        self._detokenizer = IncrementalDetokenizer(tokenizer)
        self._stops = StopSequenceFilter(sampling.stop)
        self._pending_ids: list[int] = []
        self._pending_logprob = 0.0

    @property
    def finished(self) -> bool:
        """True once the sequence has ended (its last chunk was returned)."""
        return self.finish_reason is not None

    def accept(self, logits: np.ndarray) -> GenerationChunk | None:
        """Take the next token from its logits; the chunk to send now, or None while text is held back."""
        constraint = self.constraint
        if constraint is not None:
            if constraint.stopped:  # complete, and nothing may follow
                return self.finish(FinishReason.STOP)
            logits = constraint.mask(logits)
        token, logprob = self._sampler(logits)
        if token in self._eos:
            return self.finish(FinishReason.STOP)
        if constraint is not None:
            constraint.consume(token)
        self.output_tokens += 1
        self.last_token = token
        self.token_ids.append(token)
        self._pending_ids.append(token)
        self._pending_logprob += logprob
        text = self._stops.push(self._detokenizer.push(token))
        if self._stops.stopped:
            return self.finish(FinishReason.STOP_SEQUENCE, text)
        if constraint is not None and constraint.stopped:  # the format is complete: no step more
            return self.finish(FinishReason.STOP, text)
        if self.output_tokens >= self.sampling.max_output_tokens:  # with a format: cut short, incomplete
            return self.finish(FinishReason.LENGTH, text)
        return self._chunk(text) if text else None

    def finish(self, reason: FinishReason, text: str = "") -> GenerationChunk:
        """End the sequence (also for CANCELLED): the held-back text, the finish reason and the token counts."""
        if not self._stops.stopped:
            text += self._stops.push(self._detokenizer.flush())
        text += self._stops.flush()
        if self._stops.stopped and reason is not FinishReason.CANCELLED:
            reason = FinishReason.STOP_SEQUENCE
        self.finish_reason = reason
        return self._chunk(text, reason)

    def _chunk(self, text: str, reason: FinishReason | None = None) -> GenerationChunk:
        chunk = GenerationChunk(
            text=text,
            token_count=len(self._pending_ids),
            logprob_sum=self._pending_logprob,
            token_ids=self._pending_ids,
            finish_reason=reason,
        )
        if reason is not None:
            chunk.prompt_tokens, chunk.output_tokens = self.prompt_tokens, self.output_tokens
        self._pending_ids, self._pending_logprob = [], 0.0
        return chunk
