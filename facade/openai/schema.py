"""The OpenAI request bodies this API takes, and which OpenAI parameters it accepts at which values."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "INFORMATIONAL",
    "NO_OP_VALUES",
    "ChatCompletionBody",
    "ChatMessageBody",
    "CompletionBody",
    "EmbeddingBody",
    "GenerationBody",
    "StreamOptions",
]

#: The proto's integer ranges (the services check what the values mean: >= 1, <= the model's limit).
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
UInt64 = Annotated[int, Field(ge=0, le=2**64 - 1)]

#: OpenAI parameters accepted only at the value that asks for nothing beyond what we do; null is accepted for
#: every parameter (OpenAI reads it as unset). Any other value, and any other parameter, is a 400 naming it.
NO_OP_VALUES: dict[str, Any] = {
    "logprobs": False,
    "top_logprobs": 0,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logit_bias": {},
    "functions": [],
    "parallel_tool_calls": False,
    "modalities": ["text"],
    "store": False,
    "echo": False,
    "best_of": 1,
    "suffix": "",
}
#: Parameters OpenAI itself only records (abuse monitoring, cache routing): accepted as strings, not used.
INFORMATIONAL = frozenset({"user", "safety_identifier", "prompt_cache_key"})


class _Strict(BaseModel):
    """JSON types as OpenAI documents them: no coercion ("5" is not 5), no NaN, no unknown fields."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


class StreamOptions(_Strict):
    """`stream_options`: only `include_usage` (a last chunk with the usage and no choices)."""

    include_usage: bool | None = None


class FunctionCallBody(_Strict):
    """A tool call's function: its name and the arguments as JSON text."""

    name: str
    arguments: str


class ToolCallBody(_Strict):
    """An assistant message's earlier tool call."""

    id: str
    type: Literal["function"]
    function: FunctionCallBody


class FunctionBody(_Strict):
    """A tool's function: name, description, parameters (a JSON Schema); `strict` is always what we do."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolBody(_Strict):
    """One of `tools`: a function the model may call."""

    type: Literal["function"]
    function: FunctionBody


class ChatMessageBody(_Strict):
    """One chat message. `content`: a string or a list of text parts (checked by the translation, which names
    the offending part; null in an assistant message with `tool_calls`); `developer` is OpenAI's newer name for
    `system`; a `tool` message answers the call `tool_call_id`."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Any = None
    tool_calls: list[ToolCallBody] | None = None
    tool_call_id: str | None = None


class GenerationBody(BaseModel):
    """The fields chat and completions share. Extra fields are kept to be checked against NO_OP_VALUES.

    top_k and min_tokens are extensions (vLLM's names) for the gateway's top_k and min_output_tokens;
    response_format is OpenAI's (text, json_object, json_schema), and guided_regex / guided_choice /
    guided_json are vLLM's for the formats OpenAI has no name for."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")

    model: str
    max_tokens: Int32 | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: Any = None
    seed: UInt64 | None = None
    n: Int32 | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    top_k: Int32 | None = None
    min_tokens: Int32 | None = None
    response_format: Any = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_json: Any = None


class ChatCompletionBody(GenerationBody):
    """POST /v1/chat/completions."""

    messages: list[ChatMessageBody]
    max_completion_tokens: Int32 | None = None
    tools: list[ToolBody] | None = None
    tool_choice: Any = None


class CompletionBody(GenerationBody):
    """POST /v1/completions. `prompt`: a string, or a list holding one string."""

    prompt: Any


class EmbeddingBody(BaseModel):
    """POST /v1/embeddings. `input`: a string or a list of strings (token arrays are not taken)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")

    model: str
    input: Any
    encoding_format: Literal["float", "base64"] | None = None
