"""The gRPC face of the LLM service: validates and converts protobuf, the runner does the work."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from aisemble.common.v1 import common_pb2
from aisemble.errors import FieldViolation, InvalidArgumentError
from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.resolution import Rpc
from aisemble.rpc.selection import MODEL_TRAILER, selection_message
from aisemble.rpc.server import request_context
from services.llm.answers import GenerationAnswer, Usage
from services.llm.runner import LlmRunner
from services.llm.structured import KINDS, check_format
from services.llm.tools import check_tools
from services.llm.types import ChatTurn, FinishReason, GenerationCall, OutputFormat, SamplingOverrides, Tool, ToolCall

__all__ = ["LlmServicer"]

_FINISH = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.STOP_SEQUENCE: pb.FINISH_REASON_STOP_SEQUENCE,
    FinishReason.CANCELLED: pb.FINISH_REASON_CANCELLED,
    FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
}
_ROLES = {
    pb.CHAT_ROLE_SYSTEM: "system",
    pb.CHAT_ROLE_USER: "user",
    pb.CHAT_ROLE_ASSISTANT: "assistant",
    pb.CHAT_ROLE_TOOL: "tool",
}
_TOOL_MODES = {
    pb.TOOL_CHOICE_MODE_UNSPECIFIED: "auto",
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_REQUIRED: "required",
}


def _json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


class LlmServicer(llm_service_pb2_grpc.LlmServiceServicer):
    """Complete / StreamComplete / Chat / StreamChat over one LlmRunner."""

    def __init__(self, runner: LlmRunner) -> None:
        self.runner = runner

    async def Complete(self, request: pb.CompleteRequest, context: aio.ServicerContext) -> pb.CompleteResponse:
        answer = await self.runner.complete(self._call(request, Rpc.COMPLETE), request_context(context))
        context.set_trailing_metadata(((MODEL_TRAILER, answer.resolved.spec.name),))
        return pb.CompleteResponse(**self._whole(answer))

    async def Chat(self, request: pb.ChatRequest, context: aio.ServicerContext) -> pb.ChatResponse:
        answer = await self.runner.complete(self._call(request, Rpc.CHAT), request_context(context))
        context.set_trailing_metadata(((MODEL_TRAILER, answer.resolved.spec.name),))
        return pb.ChatResponse(**self._whole(answer))

    async def StreamComplete(
        self, request: pb.StreamCompleteRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        async for fields in self._stream(self._call(request, Rpc.STREAM_COMPLETE), context):
            yield pb.StreamCompleteResponse(**fields)

    async def StreamChat(
        self, request: pb.StreamChatRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.StreamChatResponse]:
        async for fields in self._stream(self._call(request, Rpc.STREAM_CHAT), context):
            yield pb.StreamChatResponse(**fields)

    # --- conversions ---
    def _call(self, request: Any, rpc: str) -> GenerationCall:
        """The request, checked (INVALID_ARGUMENT naming every bad field) and made a GenerationCall."""
        chat = rpc in (Rpc.CHAT, Rpc.STREAM_CHAT)
        limits = self.runner.limits
        violations: list[FieldViolation] = []
        if not request.model:
            violations.append(FieldViolation("model", "is required: a registry model name, or 'auto'"))
        prompt: str | None = None
        turns: tuple[ChatTurn, ...] = ()
        if chat:
            if not request.messages:
                violations.append(FieldViolation("messages", "is required: at least one message"))
            for index, message in enumerate(request.messages):
                if message.role not in _ROLES:
                    violations.append(
                        FieldViolation(f"messages[{index}].role", "must be SYSTEM, USER, ASSISTANT or TOOL")
                    )
                if message.role == pb.CHAT_ROLE_TOOL and not message.tool_call_id:
                    violations.append(FieldViolation(f"messages[{index}].tool_call_id", "is required for TOOL"))
                if message.tool_calls and message.role != pb.CHAT_ROLE_ASSISTANT:
                    violations.append(FieldViolation(f"messages[{index}].tool_calls", "only ASSISTANT makes calls"))
                for number, made in enumerate(message.tool_calls):
                    if not _json_object(made.arguments or "{}"):
                        where = f"messages[{index}].tool_calls[{number}].arguments"
                        violations.append(FieldViolation(where, "must be a JSON object"))
            turns = tuple(
                ChatTurn(
                    _ROLES.get(m.role, "user"),
                    m.content,
                    tuple(ToolCall(c.id, c.name, c.arguments) for c in m.tool_calls),
                    m.tool_call_id,
                )
                for m in request.messages
            )
            size = sum(len(m.content.encode()) for m in request.messages)
            field = "messages"
        else:
            if not request.prompt:
                violations.append(FieldViolation("prompt", "is required and must not be empty"))
            prompt = request.prompt
            size = len(request.prompt.encode())
            field = "prompt"
        if size > limits.max_prompt_bytes:
            violations.append(FieldViolation(field, f"is {size} bytes; the limit is {limits.max_prompt_bytes} bytes"))
        overrides = self._overrides(request, violations)
        tools, choice = self._tools(request, violations) if chat else ((), "auto")
        if violations:
            raise InvalidArgumentError(
                "; ".join(f"{v.field}: {v.description}" for v in violations), field_violations=violations
            )
        return GenerationCall(
            model=request.model,
            rpc=rpc,
            sampling=overrides,
            prompt=prompt,
            messages=turns,
            tools=tools,
            tool_choice=choice,
        )

    @staticmethod
    def _tools(request: Any, violations: list[FieldViolation]) -> tuple[tuple[Tool, ...], str]:
        """A chat's tools and tool choice ('auto', 'none', 'required' or a name), their problems in `violations`."""
        tools = tuple(
            Tool(t.name, t.description, t.parameters or '{"type": "object", "properties": {}}') for t in request.tools
        )
        which = request.tool_choice.WhichOneof("choice") if request.HasField("tool_choice") else None
        choice = request.tool_choice.name if which == "name" else _TOOL_MODES.get(request.tool_choice.mode, "auto")
        if which == "mode" and request.tool_choice.mode not in _TOOL_MODES:
            violations.append(FieldViolation("tool_choice.mode", "must be AUTO, NONE or REQUIRED"))
        violations.extend(check_tools(tools, choice))
        if tools and choice != "none" and request.HasField("response_format"):
            violations.append(
                FieldViolation("response_format", "cannot be combined with tools the model may call (tool_choice NONE)")
            )
        return tools, choice

    def _overrides(self, request: Any, violations: list[FieldViolation]) -> SamplingOverrides:
        limits = self.runner.limits

        def present(name: str) -> bool:
            return bool(request.HasField(name))

        if present("max_output_tokens") and request.max_output_tokens <= 0:
            violations.append(FieldViolation("max_output_tokens", "must be > 0"))
        if present("temperature") and not (math.isfinite(request.temperature) and 0.0 <= request.temperature <= 2.0):
            violations.append(FieldViolation("temperature", f"must be between 0 and 2 (got {request.temperature})"))
        if present("top_p") and not (math.isfinite(request.top_p) and 0.0 < request.top_p <= 1.0):
            violations.append(FieldViolation("top_p", f"must be in (0, 1] (got {request.top_p})"))
        if present("min_output_tokens") and request.min_output_tokens < 0:
            violations.append(FieldViolation("min_output_tokens", "must be >= 0"))
        if present("top_k") and request.top_k < 0:
            violations.append(FieldViolation("top_k", "must be >= 0 (0 turns top-k off)"))
        if len(request.stop) > limits.max_stop_sequences:
            violations.append(
                FieldViolation("stop", f"{len(request.stop)} stop sequences; at most {limits.max_stop_sequences}")
            )
        for index, stop in enumerate(request.stop):
            if not stop or len(stop) > limits.max_stop_sequence_chars:
                violations.append(
                    FieldViolation(f"stop[{index}]", f"must be 1 to {limits.max_stop_sequence_chars} characters")
                )
        output_format = self._output_format(request, violations)
        return SamplingOverrides(
            output_format=output_format,
            max_output_tokens=request.max_output_tokens if present("max_output_tokens") else None,
            temperature=request.temperature if present("temperature") else None,
            top_p=request.top_p if present("top_p") else None,
            top_k=request.top_k if present("top_k") else None,
            seed=request.seed if present("seed") else None,
            stop=tuple(request.stop),
            min_output_tokens=request.min_output_tokens if present("min_output_tokens") else None,
        )

    @staticmethod
    def _output_format(request: Any, violations: list[FieldViolation]) -> OutputFormat | None:
        """The request's response_format as an OutputFormat (None when unset), its problems in `violations`."""
        if not request.HasField("response_format"):
            return None
        message = request.response_format
        kind = message.WhichOneof("format")
        if kind is None:
            violations.append(FieldViolation("response_format", f"set one of {', '.join(KINDS)}"))
            return None
        if kind == "choice":
            fmt = OutputFormat(kind, choices=tuple(message.choice.choices))
        else:
            fmt = OutputFormat(kind, getattr(message, kind) if kind != "json_object" else "")
        problems = check_format(fmt)
        violations.extend(problems)
        return None if problems else fmt

    @staticmethod
    def _usage(usage: Usage) -> common_pb2.Usage:
        return common_pb2.Usage(
            prompt_tokens=usage.prompt_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
            cost=usage.cost,
        )

    def _whole(self, answer: GenerationAnswer) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "text": answer.text,
            "finish_reason": _FINISH[answer.finish_reason],
            "usage": self._usage(answer.usage),
            "selection": selection_message(answer.resolved),
            "mean_token_logprob": answer.mean_token_logprob,
        }
        if answer.tool_calls:  # chat only: a completion offers no tools
            fields["tool_calls"] = [pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in answer.tool_calls]
        return fields

    async def _stream(self, call: GenerationCall, context: aio.ServicerContext) -> AsyncIterator[dict[str, Any]]:
        first = True
        async for delta in self.runner.stream(call, request_context(context)):
            fields: dict[str, Any] = {"text": delta.text, "token_count": delta.token_count}
            if delta.tool_calls:
                fields["tool_calls"] = [
                    pb.ToolCallDelta(index=d.index, id=d.id, name=d.name, arguments=d.arguments)
                    for d in delta.tool_calls
                ]
            if first:
                fields["selection"] = selection_message(delta.resolved)
                first = False
            if delta.finish_reason is not None:
                fields["finish_reason"] = _FINISH[delta.finish_reason]
                if delta.usage is not None:
                    fields["usage"] = self._usage(delta.usage)
                context.set_trailing_metadata(((MODEL_TRAILER, delta.resolved.spec.name),))
            yield fields
