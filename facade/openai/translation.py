"""OpenAI bodies to the gateway's requests and its replies back to OpenAI's JSON, field by field."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aisemble.common.v1 import common_pb2
from aisemble.llm.v1 import llm_service_pb2 as llm
from aisemble.nlp.v1 import nlp_service_pb2 as nlp
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.resolution import AUTO
from facade.openai.errors import OpenAIError
from facade.openai.schema import (
    INFORMATIONAL,
    NO_OP_VALUES,
    ChatCompletionBody,
    ChatMessageBody,
    CompletionBody,
    EmbeddingBody,
    GenerationBody,
)

__all__ = [
    "Generation",
    "StreamChunks",
    "chat_generation",
    "check_extras",
    "completion",
    "completion_generation",
    "embed_request",
    "embeddings",
    "model_card",
    "model_list",
]

#: OpenAI's finish reasons. FINISH_REASON_CANCELLED (the server stopped early) has none: it is an error.
_FINISH: dict[int, str] = {
    llm.FINISH_REASON_STOP: "stop",
    llm.FINISH_REASON_STOP_SEQUENCE: "stop",
    llm.FINISH_REASON_LENGTH: "length",
    llm.FINISH_REASON_TOOL_CALLS: "tool_calls",
}
_ROLES = {
    "system": llm.CHAT_ROLE_SYSTEM,
    "developer": llm.CHAT_ROLE_SYSTEM,
    "user": llm.CHAT_ROLE_USER,
    "assistant": llm.CHAT_ROLE_ASSISTANT,
    "tool": llm.CHAT_ROLE_TOOL,
}
_TOOL_MODES = {
    "auto": llm.TOOL_CHOICE_MODE_AUTO,
    "none": llm.TOOL_CHOICE_MODE_NONE,
    "required": llm.TOOL_CHOICE_MODE_REQUIRED,
}
#: The tasks this API serves, as /v1/models lists them.
_SERVED_TASKS = (common_pb2.TASK_TEXT_GENERATION, common_pb2.TASK_EMBEDDING)


def _same(value: Any, no_op: Any) -> bool:
    """Equal, and a bool only where a bool is meant (True == 1 in Python)."""
    return bool(value == no_op) and isinstance(value, bool) == isinstance(no_op, bool)


def check_extras(extras: dict[str, Any] | None) -> None:
    """400 for a parameter we do not support, unless it is null, at its no-op value, or informational."""
    for name, value in (extras or {}).items():
        if value is None or (name in NO_OP_VALUES and _same(value, NO_OP_VALUES[name])):
            continue
        if name in INFORMATIONAL:
            if isinstance(value, str):
                continue
            raise OpenAIError.invalid(name, f"'{name}' must be a string", "invalid_type")
        hint = f" (only {json.dumps(NO_OP_VALUES[name])} or null)" if name in NO_OP_VALUES else ""
        raise OpenAIError.invalid(name, f"'{name}' is not supported by this API{hint}", "unsupported_parameter")


def _strings(value: Any, param: str, single: bool = False) -> list[str]:
    """A string, or a list of strings (of one string when `single`), as a list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and (len(value) == 1 or not single):
        return value
    what = "a string or a list holding one string" if single else "a string or a list of strings"
    raise OpenAIError.invalid(param, f"'{param}' must be {what}", "invalid_type")


def _content(value: Any, param: str) -> str:
    """A message's content: a string, or text parts joined (images, audio and files are not taken)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        texts = []
        for index, part in enumerate(value):
            where = f"{param}[{index}]"
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise OpenAIError.invalid(where, f"'{where}' must be a text part: only text content is supported")
            if set(part) - {"type", "text"}:
                raise OpenAIError.invalid(where, f"'{where}' has fields beyond type and text", "unsupported_parameter")
            texts.append(part["text"])
        return "".join(texts)
    raise OpenAIError.invalid(param, f"'{param}' must be a string or a list of text parts", "invalid_type")


@dataclass(frozen=True)
class Generation:
    """An OpenAI generation request as the gateway takes it: the request fields (Chat and StreamChat share
    them, as Complete and StreamComplete do), streaming, and the caller's name of each field for errors."""

    fields: dict[str, Any]
    stream: bool
    include_usage: bool
    param_names: dict[str, str] = field(default_factory=dict)


def _generation(body: GenerationBody, max_tokens: int | None, max_tokens_param: str, **inputs: Any) -> Generation:
    """The shared fields (sampling, limits, stop) around the request's own `inputs` (messages or prompt)."""
    check_extras(body.model_extra)
    if body.n is not None and body.n != 1:
        raise OpenAIError.invalid("n", "'n': only 1 choice per request is supported")
    if body.stream_options is not None and not body.stream:
        raise OpenAIError.invalid("stream_options", "'stream_options' is only allowed when 'stream' is true")
    optional = {
        "max_output_tokens": max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "seed": body.seed,
        "min_output_tokens": body.min_tokens,
        "stop": None if body.stop is None else _strings(body.stop, "stop"),
    }
    fmt = _response_format(body)
    if fmt is not None:
        optional["response_format"] = fmt
    fields = {"model": body.model, **inputs, **{k: v for k, v in optional.items() if v is not None}}
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    names = {"max_output_tokens": max_tokens_param, "min_output_tokens": "min_tokens"}
    return Generation(fields, bool(body.stream), include_usage, names)


def _response_format(body: GenerationBody) -> llm.ResponseFormat | None:
    """The gateway's ResponseFormat for OpenAI's `response_format` or vLLM's `guided_*` (at most one of them);
    the schema itself is checked by the LLM service, which names what is wrong."""
    given = [
        name
        for name in ("response_format", "guided_regex", "guided_choice", "guided_json")
        if getattr(body, name) is not None
    ]
    if len(given) > 1:
        raise OpenAIError.invalid(given[1], f"give one of {', '.join(given)}, not several")
    if body.guided_regex is not None:
        return llm.ResponseFormat(regex=body.guided_regex)
    if body.guided_choice is not None:
        return llm.ResponseFormat(choice=llm.Choices(choices=body.guided_choice))
    if body.guided_json is not None:
        return llm.ResponseFormat(json_schema=json.dumps(body.guided_json))
    value = body.response_format
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return llm.ResponseFormat(json_object=llm.AnyJson())
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict | bool):
            raise OpenAIError.invalid(
                "response_format.json_schema.schema", "'response_format.json_schema.schema' must be a JSON Schema"
            )
        return llm.ResponseFormat(json_schema=json.dumps(spec["schema"]))
    raise OpenAIError.invalid(
        "response_format.type", "'response_format.type' must be 'text', 'json_object' or 'json_schema'"
    )


def chat_generation(body: ChatCompletionBody) -> Generation:
    """The Chat / StreamChat fields of a chat completion request."""
    limit, param = body.max_completion_tokens, "max_completion_tokens"
    if body.max_tokens is not None:
        if limit is not None and limit != body.max_tokens:
            raise OpenAIError.invalid("max_tokens", "give 'max_tokens' or 'max_completion_tokens', not both")
        limit, param = body.max_tokens, "max_tokens"
    messages = [_message(m, i) for i, m in enumerate(body.messages)]
    tools = [
        llm.Tool(
            name=t.function.name,
            description=t.function.description or "",
            parameters=json.dumps(t.function.parameters) if t.function.parameters is not None else "",
        )
        for t in body.tools or []
    ]
    inputs: dict[str, Any] = {"messages": messages}
    if tools:
        inputs["tools"] = tools
    if body.tool_choice is not None:
        inputs["tool_choice"] = _tool_choice(body.tool_choice)
    return _generation(body, limit, param, **inputs)


def _message(message: ChatMessageBody, index: int) -> llm.ChatMessage:
    """One chat message; an assistant's earlier calls and a tool's result keep their ids."""
    made = message.tool_calls or []
    calls = [llm.ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in made]
    content = "" if message.content is None and calls else _content(message.content, f"messages[{index}].content")
    return llm.ChatMessage(
        role=_ROLES[message.role], content=content, tool_calls=calls, tool_call_id=message.tool_call_id or ""
    )


def _tool_choice(value: Any) -> llm.ToolChoice:
    """`tool_choice`: "auto", "none", "required" or {"type": "function", "function": {"name": ...}}."""
    if isinstance(value, str) and value in _TOOL_MODES:
        return llm.ToolChoice(mode=_TOOL_MODES[value])
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        name = value["function"].get("name")
        if isinstance(name, str):
            return llm.ToolChoice(name=name)
    raise OpenAIError.invalid(
        "tool_choice", "'tool_choice' must be 'auto', 'none', 'required' or {'type': 'function', 'function': {'name'}}"
    )


def completion_generation(body: CompletionBody) -> Generation:
    """The Complete / StreamComplete fields of a (legacy) completion request."""
    prompt = _strings(body.prompt, "prompt", single=True)[0]
    return _generation(body, body.max_tokens, "max_tokens", prompt=prompt)


def response_id(prefix: str) -> str:
    """A fresh response id (`chatcmpl-…`, `cmpl-…`)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def _usage(usage: common_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _finish(reason: int) -> str:
    """OpenAI's finish reason; a generation the server cut short is a 503 (retry), never a silent truncation."""
    if reason not in _FINISH:
        raise OpenAIError(
            503,
            "the server stopped the generation before it ended (it may be shutting down): retry",
            code="generation_cancelled",
            retry_after_s=1.0,
        )
    return _FINISH[reason]


def completion(reply: llm.ChatResponse | llm.CompleteResponse, chat: bool) -> dict[str, Any]:
    """A chat.completion or text_completion object."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": _finish(reply.finish_reason), "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": reply.text, "refusal": None}
        if reply.tool_calls:  # type: ignore[union-attr]
            choice["message"]["content"] = None
            choice["message"]["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in reply.tool_calls  # type: ignore[union-attr]
            ]
    else:
        choice["text"] = reply.text
    return {
        "id": response_id("chatcmpl" if chat else "cmpl"),
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": reply.selection.model,
        "choices": [choice],
        "usage": _usage(reply.usage),
    }


class StreamChunks:
    """The chunks of one streamed completion, from the gateway's messages: for chat a first chunk with the
    role, then one per text delta, one with the finish reason, and (include_usage) one with the usage and no
    choices; every other chunk then has "usage": null, as OpenAI sends it."""

    def __init__(self, model: str, chat: bool, include_usage: bool) -> None:
        self.chat = chat
        self.include_usage = include_usage
        self._head = {
            "id": response_id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self._started = False

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {**self._head, "choices": choices}
        if self.include_usage:
            chunk["usage"] = usage
        return chunk

    def _choice(self, text: str, finish: str | None = None, first: bool = False) -> dict[str, Any]:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if first else {"content": text} if text else {}
            content: dict[str, Any] = {"delta": delta}
        else:
            content = {"text": text}
        return {"index": 0, **content, "finish_reason": finish, "logprobs": None}

    def of(self, reply: llm.StreamChatResponse | llm.StreamCompleteResponse) -> Iterator[dict[str, Any]]:
        """The chunks one gateway message makes (none for a message with tokens but no whole character yet)."""
        if self.chat and not self._started:
            yield self._chunk([self._choice("", first=True)])
        self._started = True
        if reply.text:
            yield self._chunk([self._choice(reply.text)])
        calls = getattr(reply, "tool_calls", ())
        if calls:
            pieces = []
            for d in calls:
                function: dict[str, Any] = {"arguments": d.arguments}
                piece: dict[str, Any] = {"index": d.index, "function": function}
                if d.id:
                    piece.update(id=d.id, type="function")
                    function["name"] = d.name
                pieces.append(piece)
            yield self._chunk([{"index": 0, "delta": {"tool_calls": pieces}, "finish_reason": None, "logprobs": None}])
        if reply.finish_reason != llm.FINISH_REASON_UNSPECIFIED:
            yield self._chunk([self._choice("", _finish(reply.finish_reason))])
            if self.include_usage:
                yield self._chunk([], _usage(reply.usage))


def embed_request(body: EmbeddingBody) -> nlp.EmbedRequest:
    """The Embed request of an embeddings request."""
    check_extras(body.model_extra)
    return nlp.EmbedRequest(model=body.model, texts=_strings(body.input, "input"))


def _vector(values: Iterable[float], encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as OpenAI sends it (numpy.frombuffer reads it back)
        floats = list(values)
        return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode("ascii")
    return list(values)


def embeddings(reply: nlp.EmbedResponse, encoding: str) -> dict[str, Any]:
    """An embeddings list; usage counts the input tokens."""
    tokens = sum(e.token_count for e in reply.embeddings)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _vector(e.values, encoding)}
            for i, e in enumerate(reply.embeddings)
        ],
        "model": reply.selection.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def model_card(model: rpb.Model | None) -> dict[str, Any]:
    """A model object (None: `auto`, the gateway's own choice among the healthy models)."""
    if model is None:
        return {"id": AUTO, "object": "model", "created": 0, "owned_by": "aisemble"}
    created = model.lineage.created_at.seconds if model.HasField("lineage") else 0
    return {"id": model.name, "object": "model", "created": created, "owned_by": "aisemble"}


def model_list(models: Iterable[rpb.Model]) -> dict[str, Any]:
    """The models this API serves (text generation, embeddings), and `auto` first."""
    served = [model_card(m) for m in models if m.task in _SERVED_TASKS]
    return {"object": "list", "data": [model_card(None), *served]}
