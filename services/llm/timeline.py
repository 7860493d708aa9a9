"""When a traced generation's steps happened in the batcher (queued, prefilled, decoded), recorded as spans when it
ends: the batcher's thread records times only, and only while the call is traced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aisemble.rpc.telemetry import now_ns, record_span
from services.llm.types import FinishReason

__all__ = ["Timeline"]


@dataclass
class Timeline:
    """When a traced sequence's steps happened (time.time_ns()); its spans are recorded when it ends."""

    trace: Any
    queued: int
    prefill_start: int = 0
    prefill_end: int = 0
    prefilled_with: int = 0  # prompts prefilled in the same call
    reused_tokens: int = 0  # tokens that came from the prefix cache

    def prefilled(self, start: int, end: int, together: int, reused: int = 0) -> None:
        if not self.prefill_start:
            self.prefill_start = start
        self.prefill_end, self.prefilled_with, self.reused_tokens = end, together, self.reused_tokens + reused

    def record(self, prompt_tokens: int, output_tokens: int, reason: FinishReason) -> None:
        """The sequence's queue wait, prefill and decode spans, children of its call's span."""
        end = now_ns()
        prefill_start = self.prefill_start or end
        prefill_end = self.prefill_end or end
        record_span("llm.queue_wait", self.trace, self.queued, prefill_start)
        if self.prefill_start:
            facts = {
                "gen_ai.usage.input_tokens": prompt_tokens,
                "aisemble.prefill.batch": self.prefilled_with,
            }
            if self.reused_tokens:
                facts["aisemble.prefix_cache.tokens_reused"] = self.reused_tokens
            record_span("llm.prefill", self.trace, prefill_start, prefill_end, facts)
            record_span(
                "llm.decode",
                self.trace,
                prefill_end,
                end,
                {
                    "gen_ai.usage.output_tokens": output_tokens,
                    "gen_ai.response.finish_reasons": (reason.name,),
                },
            )
