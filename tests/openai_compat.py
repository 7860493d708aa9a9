"""A local OpenAI-compatible HTTP endpoint for the tests: the real wire protocol, answered by a real local model.

POST /v1/chat/completions and /v1/completions, JSON or SSE streaming (`data: {...}` lines, `data: [DONE]`),
bearer-key auth, OpenAI's error bodies. A few model names trigger faults on purpose, to test how our
OpenAI backend maps them: "rate-limited" (429 + Retry-After: 7), "broken" (500), "slow" (answers after 5 s).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aisemble.hosting.backend import RequestContext
from services.llm.types import ChatTurn, GenerationRequest, OutputFormat, SamplingParams
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
            turns = tuple(ChatTurn(m["role"], m["content"]) for m in body["messages"])
            request = GenerationRequest(sampling=sampling, messages=turns)
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

        try:
            for chunk in self.endpoint.backend.stream(request, ctx):
                finish = _FINISH[chunk.finish_reason.value] if chunk.finish_reason else None
                if chunk.text or finish:
                    content = {"delta": {"content": chunk.text}} if chat else {"text": chunk.text}
                    event([{"index": 0, **content, "finish_reason": finish}])
                if chunk.finish_reason and include_usage:
                    event([], _usage(chunk))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            ctx.cancelled.set()  # the client went away: stop the model
            self.endpoint.disconnects += 1
        self.close_connection = True


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
