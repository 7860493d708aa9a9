"""A local OpenAI-compatible HTTP endpoint for the tests: the real wire protocol, answered by a real local model.

POST /v1/chat/completions and /v1/completions, JSON or SSE streaming (`data: {...}` lines, `data: [DONE]`),
bearer-key auth, OpenAI's error bodies. A few model names trigger faults on purpose, to test how our
OpenAI backend maps them: "rate-limited" (429 + Retry-After: 7), "broken" (500), "slow" (answers after 5 s).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

from aisemble.hosting.backend import RequestContext
from services.llm.tools import ToolCallParser, tool_format
from services.llm.types import ChatTurn, GenerationRequest, OutputFormat, SamplingParams, Tool, ToolCall
from tests.http_endpoint import JsonHandler, LocalEndpoint

__all__ = ["OpenAICompatibleServer"]

_FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length", "cancelled": "stop"}


class _Handler(JsonHandler):
    endpoint: OpenAICompatibleServer

    def do_POST(self) -> None:
        body = self._read_json()
        self.endpoint.requests.append({"path": self.path, "body": body})
        if self.headers.get("Authorization") != f"Bearer {self.endpoint.api_key}":
            return self._error(401, "Incorrect API key provided.", "invalid_api_key")
        model = body.get("model", "")
        if model == "rate-limited":
            return self._error(429, "Rate limit reached.", "rate_limit_exceeded", {"Retry-After": "7"})
        if model == "broken":
            return self._error(500, "The server had an error.", "server_error")
        if model == "slow":
            time.sleep(5)
        chat = self.path.endswith("/chat/completions")
        if not chat and not self.path.endswith("/completions"):
            return self._error(404, f"no route {self.path}", "not_found")
        sampling = SamplingParams(
            max_output_tokens=int(body.get("max_tokens") or 16),
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            seed=body.get("seed"),
            stop=tuple([body["stop"]] if isinstance(body.get("stop"), str) else body.get("stop") or ()),
            output_format=_output_format(body),
        )
        if chat:
            tools = tuple(
                Tool(
                    t["function"]["name"], t["function"].get("description", ""), json.dumps(t["function"]["parameters"])
                )
                for t in body.get("tools") or []
            )
            choice_value = body.get("tool_choice") or "auto"
            choice = choice_value if isinstance(choice_value, str) else choice_value["function"]["name"]
            if tools and choice != "none":
                sampling = dataclasses.replace(sampling, output_format=tool_format(tools, choice))
            turns = tuple(_turn(m) for m in body["messages"])
            request = GenerationRequest(sampling=sampling, messages=turns, tools=tools, tool_choice=choice)
        else:
            request = GenerationRequest(sampling=sampling, prompt=body["prompt"])
        if body.get("stream"):
            self._stream(model, chat, request, bool((body.get("stream_options") or {}).get("include_usage")))
        else:
            result = self.endpoint.backend.run(request, RequestContext())
            choice: dict[str, Any] = {"index": 0, "finish_reason": _FINISH[result.finish_reason.value]}
            if chat:
                choice["message"] = {"role": "assistant", "content": result.text}
            else:
                choice["text"] = result.text
            self._json(
                200,
                {
                    "id": uuid.uuid4().hex,
                    "object": "chat.completion" if chat else "text_completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [choice],
                    "usage": _usage(result),
                },
            )

    def _stream(self, model: str, chat: bool, request: GenerationRequest, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        ctx = RequestContext()
        ident, created = uuid.uuid4().hex, int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        def event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> None:
            payload: dict[str, Any] = {
                "id": ident,
                "object": kind,
                "created": created,
                "model": model,
                "choices": choices,
            }
            if usage is not None:
                payload["usage"] = usage
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        parser = ToolCallParser() if request.offers_tools else None
        try:
            for chunk in self.endpoint.backend.stream(request, ctx):
                finish = _FINISH[chunk.finish_reason.value] if chunk.finish_reason else None
                text = chunk.text
                if parser is not None:  # as a server with tool calling streams them
                    text, pieces = parser.feed(chunk.text)
                    if finish:
                        found, rest = parser.finish()
                        pieces += rest
                        finish = "tool_calls" if found else finish
                    calls = [
                        {
                            "index": 0,
                            **({"id": d.id, "type": "function"} if d.id else {}),
                            "function": {**({"name": d.name} if d.name else {}), "arguments": d.arguments},
                        }
                        for d in pieces
                    ]
                    if calls:
                        event([{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}])
                if text or finish:
                    content = {"delta": {"content": text}} if chat else {"text": text}
                    event([{"index": 0, **content, "finish_reason": finish}])
                if chunk.finish_reason and include_usage:
                    event([], _usage(chunk))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            ctx.cancelled.set()  # the client went away: stop the model
            self.endpoint.disconnects += 1
        self.close_connection = True


def _turn(message: dict[str, Any]) -> ChatTurn:
    calls = tuple(
        ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []
    )
    return ChatTurn(message["role"], message.get("content") or "", calls, message.get("tool_call_id") or "")


def _output_format(body: dict[str, Any]) -> OutputFormat | None:
    """OpenAI's response_format and vLLM's guided_* as the real model enforces them (what such a server does)."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return OutputFormat("json_schema", json.dumps(fmt["json_schema"]["schema"]))
    if fmt.get("type") == "json_object":
        return OutputFormat("json_object")
    if "guided_regex" in body:
        return OutputFormat("regex", body["guided_regex"])
    if "guided_choice" in body:
        return OutputFormat("choice", choices=tuple(body["guided_choice"]))
    if "guided_json" in body:
        return OutputFormat("json_schema", json.dumps(body["guided_json"]))
    return None


def _usage(result: Any) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.output_tokens,
        "total_tokens": result.prompt_tokens + result.output_tokens,
    }


class OpenAICompatibleServer(LocalEndpoint):
    """Serves one local text-generation backend under any model name, on 127.0.0.1:<free port>."""

    handler = _Handler

    def __init__(self, backend: Any, api_key: str) -> None:
        self.backend = backend
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.disconnects = 0
        super().__init__()
