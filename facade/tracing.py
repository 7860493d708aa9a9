"""ASGI middleware: each HTTP request a server span (the caller's W3C traceparent honoured), current while it is
served, so that its gateway calls join the caller's trace."""

from __future__ import annotations

import re

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aisemble.rpc.telemetry import context_from_metadata, end_span, start_span, tracing_on

__all__ = ["TraceRequests"]

#: Paths whose tail is a name (a model): the span is named by the route, so span names stay few.
_ROUTES = ((re.compile(r"^/v1/models/.+"), "/v1/models/{model}"), (re.compile(r"^/console/.+"), "/console/{page}"))


def _route(path: str) -> str:
    for pattern, route in _ROUTES:
        if pattern.match(path):
            return route
    return path


class TraceRequests:
    """One SERVER span per HTTP request while tracing is on (a pass-through otherwise)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing_on():
            return await self.app(scope, receive, send)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())]
        method, route = scope.get("method", "GET"), _route(scope.get("path", "/"))
        serving = start_span(
            f"{method} {route}",
            context_from_metadata(headers),
            SpanKind.SERVER,
            {"http.request.method": method, "http.route": route, "url.path": scope.get("path", "/")},
        )
        status = {"code": 500}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
                serving.set_attribute("http.response.status_code", status["code"])
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(serving))
        error: BaseException | None = None
        try:
            await self.app(scope, receive, sending)
        except BaseException as exc:
            error = exc
            raise
        finally:
            otel_context.detach(token)
            end_span(serving, error, "OK" if status["code"] < 500 else "INTERNAL")
