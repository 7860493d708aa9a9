"""Domain types of text generation: what backends take and give, and the request of each call."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "ChatTurn",
    "FinishReason",
    "GenerationCall",
    "GenerationChunk",
    "GenerationRequest",
    "OutputFormat",
    "SamplingOverrides",
    "SamplingParams",
    "Tool",
    "ToolCall",
]


class FinishReason(enum.Enum):
    """Why generation ended."""

    STOP = "stop"  # the model produced its end-of-sequence token
    LENGTH = "length"  # max_output_tokens reached
    STOP_SEQUENCE = "stop_sequence"  # one of the request's stop sequences appeared
    CANCELLED = "cancelled"  # the caller went away or the deadline passed
    TOOL_CALLS = "tool_calls"  # the model called a tool (the answer's tool_calls)


@dataclass(frozen=True)
class ToolCall:
    """A call of a tool by the model: its id, the tool's name and the arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, its arguments' JSON Schema (JSON text)."""

    name: str
    description: str = ""
    parameters: str = '{"type": "object", "properties": {}}'


@dataclass(frozen=True)
class ChatTurn:
    """One chat message: role is 'system', 'user', 'assistant' or 'tool' (a tool's result for `tool_call_id`);
    an assistant turn may carry the tool calls it made."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


@dataclass(frozen=True)
class OutputFormat:
    """What the output must be: kind 'json_schema' (value: the schema's JSON text), 'json_object' (any JSON
    object), 'regex' (value: the pattern the whole output matches), 'choice' (choices: the allowed answers), or
    'lark' (value: a grammar the service builds itself, for tool calls)."""

    kind: str
    value: str = ""
    choices: tuple[str, ...] = ()

    @property
    def field(self) -> str:
        """The request field that holds it (for field violations)."""
        return f"response_format.{'choice.choices' if self.kind == 'choice' else self.kind}"


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. temperature 0 means greedy (top_p/top_k/seed are then unused)."""

    max_output_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_output_tokens: int = 0  # the end-of-sequence token cannot be chosen before this many
    output_format: OutputFormat | None = None  # enforced while decoding (services/llm/structured.py)


@dataclass(frozen=True)
class GenerationRequest:
    """A completion (prompt) or a chat (messages) to run on one model."""

    sampling: SamplingParams
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] = ()
    tools: tuple[Tool, ...] = ()  # chat: functions the model may call
    tool_choice: str = "auto"  # 'auto', 'none', 'required' or a tool's name

    @property
    def is_chat(self) -> bool:
        """True for a chat request (messages), False for a plain completion (prompt)."""
        return self.prompt is None

    @property
    def offers_tools(self) -> bool:
        """True when the model may (or must) call one of the request's tools."""
        return bool(self.tools) and self.tool_choice != "none"


@dataclass
class GenerationChunk:
    """A piece of output. The last chunk of a generation has finish_reason and the token counts set."""

    text: str = ""
    token_count: int = 0  # tokens generated since the previous chunk
    logprob_sum: float = 0.0  # sum of the log-probabilities of those tokens
    token_ids: list[int] = field(default_factory=list)  # those tokens (local backends only)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0


# --- one call of the service: the runner's input, validated (its answer: answers.py) ---


@dataclass(frozen=True)
class SamplingOverrides:
    """What the caller set; None means 'use the model's default'."""

    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_output_tokens: int | None = None
    output_format: OutputFormat | None = None


@dataclass(frozen=True)
class GenerationCall:
    """Complete / Chat (and their streams): the model (a registry name or 'auto'), the prompt or the messages,
    and the caller's sampling choices; `rpc` is the method's full path (the tasks it accepts, its errors)."""

    model: str
    rpc: str
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"
