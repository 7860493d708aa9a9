"""What each call of text generation answers: its result and the model that served it (`Resolved`)."""

from __future__ import annotations

from dataclasses import dataclass

from aisemble.resolution import Resolved
from services.llm.tools import ToolCallDelta
from services.llm.types import FinishReason, ToolCall

__all__ = ["GenerationAnswer", "GenerationDelta", "Usage"]


@dataclass(frozen=True)
class Usage:
    """Tokens read and written by one generation, and its cost from the registry's prices."""

    prompt_tokens: int
    output_tokens: int
    cost: float

    @property
    def total_tokens(self) -> int:
        """Prompt and output tokens together."""
        return self.prompt_tokens + self.output_tokens


@dataclass(frozen=True)
class GenerationAnswer:
    """A whole generation and the model that wrote it."""

    resolved: Resolved
    text: str
    finish_reason: FinishReason
    usage: Usage
    mean_token_logprob: float
    tool_calls: tuple[ToolCall, ...] = ()  # the tool the model called (finish_reason TOOL_CALLS; text empty)


@dataclass(frozen=True)
class GenerationDelta:
    """A piece of a streamed generation; the last one has finish_reason and usage set."""

    resolved: Resolved
    text: str
    token_count: int
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()  # pieces of the call being made
