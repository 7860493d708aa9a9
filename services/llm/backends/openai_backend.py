"""Text generation through the OpenAI API (or any OpenAI-compatible server), streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from aisemble.errors import AisembleError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.openai_client import OpenAIClientSettings, make_client, map_openai_error
from aisemble.hosting.settings import setting
from services.llm.types import ChatTurn, FinishReason, GenerationChunk, GenerationRequest, OutputFormat

__all__ = ["OpenAIBackend", "OpenAILlmSettings"]

# "tool_calls": the runner reads the call from the text (_CallText writes it in the form our calls take).
_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.STOP,
    "tool_calls": FinishReason.STOP,
}


@dataclass(frozen=True)
class OpenAILlmSettings(OpenAIClientSettings):
    """A remote text-generation model's params: the client's (api_key_env, timeout_s: 60 s) and `prompt_api`."""

    prompt_api: str = setting("completions", choices=("completions", "chat"))


def _message(turn: ChatTurn) -> dict[str, Any]:
    """A chat turn as OpenAI takes it: an assistant's calls and a tool's result with their ids."""
    message: dict[str, Any] = {"role": turn.role, "content": turn.content}
    if turn.tool_calls:
        message["content"] = turn.content or None
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in turn.tool_calls
        ]
    if turn.tool_call_id:
        message["tool_call_id"] = turn.tool_call_id
    return message


class _CallText:
    """The provider's streamed tool call (its first call) as the text our calls are generated in,
    {"name": ..., "arguments": ...}, so the runner reads both the same way."""

    def __init__(self) -> None:
        self.open = False

    def text(self, deltas: list[Any]) -> str:
        out = ""
        for delta in deltas:
            if getattr(delta, "index", 0) != 0 or delta.function is None:
                continue
            if not self.open and delta.function.name:
                out += '{"name": ' + json.dumps(delta.function.name) + ', "arguments": '
                self.open = True
            if self.open:
                out += delta.function.arguments or ""
        return out

    def close(self) -> str:
        closing, self.open = ("}" if self.open else ""), False
        return closing


def _response_format(fmt: OutputFormat) -> dict[str, Any]:
    """OpenAI's `response_format` for a JSON format (chat completions)."""
    if fmt.kind == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": json.loads(fmt.value), "strict": True}}


def _guided(fmt: OutputFormat) -> dict[str, Any]:
    """vLLM's guided-decoding parameters for a format (OpenAI itself has none for a regex or a choice list)."""
    if fmt.kind == "regex":
        return {"guided_regex": fmt.value}
    if fmt.kind == "choice":
        return {"guided_choice": list(fmt.choices)}
    return {"guided_json": json.loads(fmt.value) if fmt.kind == "json_schema" else {"type": "object"}}


class OpenAIBackend(Backend):
    """Chat requests go to /chat/completions; prompts to /completions (params.prompt_api: chat sends them
    as one user message instead). model_id is the remote model; endpoint the base URL.

    OpenAI reports a stop sequence as finish reason "stop", like end-of-sequence: both map to STOP.
    An output format goes to the provider: OpenAI's `response_format` for JSON in chat, else vLLM's
    `guided_regex` / `guided_choice` / `guided_json` (a provider without them ignores or refuses them).
    Tools go as the provider's own `tools` / `tool_choice` (native_tools: the runner adds no grammar).
    """

    native_tools = True

    provider = "openai"
    tasks = frozenset({"text-generation"})
    #: This backend's settings in the registry entry's params, read once at load.
    settings_class: ClassVar[type[OpenAILlmSettings]] = OpenAILlmSettings

    def load(self) -> None:
        self.settings = self.settings_class.for_serving(self.spec)
        self.client = make_client(self.spec, self.settings)
        self.remote_model = self.spec.model_id or self.spec.name
        self.prompt_api = self.settings.prompt_api

    def info(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.spec.name,
            "remote_model": self.remote_model,
            "base_url": str(self.client.base_url),
        }

    def run(self, request: GenerationRequest, ctx: RequestContext) -> GenerationChunk:
        whole = GenerationChunk()
        for chunk in self.stream(request, ctx):
            whole.text += chunk.text
            whole.token_count += chunk.token_count
            if chunk.finish_reason is not None:
                whole.finish_reason = chunk.finish_reason
                whole.prompt_tokens, whole.output_tokens = chunk.prompt_tokens, chunk.output_tokens
        return whole

    def _arguments(self, request: GenerationRequest, ctx: RequestContext) -> dict[str, Any]:
        params = request.sampling
        arguments: dict[str, Any] = {
            "model": self.remote_model,
            "max_tokens": params.max_output_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            arguments["stop"] = list(params.stop)
        if params.seed is not None:
            arguments["seed"] = params.seed
        extra: dict[str, Any] = {}
        if params.top_k:
            extra["top_k"] = params.top_k
        if params.min_output_tokens:
            extra["min_tokens"] = params.min_output_tokens  # OpenAI-compatible servers (vLLM) take it
        fmt = params.output_format
        if request.tools:  # the provider's own tool calling (the runner adds no grammar for it)
            arguments["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": json.loads(t.parameters)},
                }
                for t in request.tools
            ]
            choice = request.tool_choice
            named = {"type": "function", "function": {"name": choice}}
            arguments["tool_choice"] = choice if choice in ("auto", "none", "required") else named
        if fmt is not None:
            chat = request.is_chat or self.prompt_api == "chat"
            if fmt.kind in ("json_schema", "json_object") and chat:
                arguments["response_format"] = _response_format(fmt)
            else:  # the extensions of OpenAI-compatible servers (vLLM's guided decoding)
                extra.update(_guided(fmt))
        if extra:
            arguments["extra_body"] = extra
        remaining = ctx.time_remaining
        if remaining is not None:
            arguments["timeout"] = max(0.05, remaining)
        return arguments

    def stream(self, request: GenerationRequest, ctx: RequestContext) -> Iterator[GenerationChunk]:
        arguments = self._arguments(request, ctx)
        chat = request.is_chat or self.prompt_api == "chat"
        finish, usage, output_tokens = FinishReason.STOP, None, 0
        calls = _CallText()
        try:
            if chat:
                messages = [_message(t) for t in request.messages] or [
                    {"role": "user", "content": request.prompt or ""}
                ]
                response = self.client.chat.completions.create(messages=messages, **arguments)
            else:
                response = self.client.completions.create(prompt=request.prompt, **arguments)
            with response:
                for event in response:
                    if ctx.is_done():
                        finish = FinishReason.CANCELLED
                        break  # leaving the block closes the HTTP stream: the server stops generating
                    if event.usage is not None:
                        usage = event.usage
                    for choice in event.choices:
                        text = (choice.delta.content or "") if chat else (choice.text or "")
                        if chat:
                            text += calls.text(choice.delta.tool_calls or [])
                        if text:
                            output_tokens += 1
                            yield GenerationChunk(text=text, token_count=1)
                        if choice.finish_reason:
                            finish = _FINISH.get(choice.finish_reason, FinishReason.STOP)
                            closing = calls.close()
                            if closing:
                                yield GenerationChunk(text=closing)
        except AisembleError:
            raise
        except Exception as exc:
            raise map_openai_error(exc, self.spec.name) from exc
        yield GenerationChunk(
            finish_reason=finish,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else output_tokens,
        )

    def cleanup(self) -> None:
        client, self.client = getattr(self, "client", None), None
        if client is not None:
            client.close()
