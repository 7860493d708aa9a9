"""The OpenAI-compatible ASGI app: one route per OpenAI endpoint, each a call to the gateway, translated both ways."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aisemble.common.v1 import common_pb2
from aisemble.llm.v1 import llm_service_pb2 as llm
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.resolution import AUTO
from aisemble.rpc.client import DEFAULT_MAX_MESSAGE_BYTES, PLAINTEXT, REQUEST_ID_KEY, Peer
from aisemble.rpc.selection import quote_reason
from facade.openai.errors import OpenAIError, error_response, from_status, from_validation
from facade.openai.schema import ChatCompletionBody, CompletionBody, EmbeddingBody
from facade.openai.streaming import ClientGone, EventStream, unless_disconnected
from facade.openai.translation import (
    Generation,
    StreamChunks,
    chat_generation,
    completion,
    completion_generation,
    embed_request,
    embeddings,
    model_card,
    model_list,
)
from facade.openai.upstream import DEFAULT_TIMEOUT_S, CallOptions, GatewayClient, list_all_models
from facade.tracing import TraceRequests

__all__ = ["build_app"]

log = logging.getLogger(__name__)
Body = TypeVar("Body", bound=BaseModel)
#: Response headers naming the model that served the call and why (percent-encoded like the gRPC trailers).
MODEL_HEADER = "x-aisemble-model"
REASON_HEADER = "x-aisemble-selection-reason"
#: How long /health waits for the gateway's health check.
HEALTH_TIMEOUT_S = 2.0


class BodyLimit:
    """ASGI middleware: a request body over max_bytes (the mesh's max_message_bytes) is refused with 413 before
    anything parses it; a body within the limit is read whole, then handed on."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> Response:
        message = f"the request body is over {self.max_bytes} bytes, the mesh's max_message_bytes"
        return error_response(OpenAIError(413, message, code="request_too_large"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large()(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._too_large()(scope, receive, send)
            more = message.get("more_body", False)
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            message, whole = whole, None
            return message if message is not None else await receive()

        return await self.app(scope, replay, send)


def _parse(raw: bytes, body_type: type[Body]) -> Body:
    try:
        return body_type.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation(exc) from None


def _headers(options: CallOptions, selection: common_pb2.ModelSelection) -> dict[str, str]:
    return {
        MODEL_HEADER: selection.model,
        REASON_HEADER: quote_reason(selection.reason),
        REQUEST_ID_KEY: options.request_id,
    }


class OpenAIRoutes:
    """The endpoints, over one GatewayClient."""

    def __init__(self, gateway: GatewayClient) -> None:
        self.gateway = gateway

    def _options(self, request: Request) -> CallOptions:
        options = self.gateway.options(request.headers)
        request.state.request_id = options.request_id  # for the log line of an unexpected failure
        return options

    async def health(self, request: Request) -> Response:
        """200 while the gateway answers SERVING to its grpc.health.v1 check, else 503."""
        try:
            reply = await self.gateway.health.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_S)
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            serving = False
        return JSONResponse({"status": "ok" if serving else "unavailable"}, status_code=200 if serving else 503)

    async def live(self, request: Request) -> Response:
        """200 while this process serves HTTP, whatever the gateways' state (the supervisor's liveness check:
        a facade whose gateways are down is not restarted for it; /health is readiness)."""
        return JSONResponse({"status": "alive"})

    async def models(self, request: Request) -> Response:
        """GET /v1/models: ListModels, every page."""
        options = self._options(request)
        listed = await list_all_models(self.gateway.registry, options)
        return JSONResponse(model_list(listed), headers={REQUEST_ID_KEY: options.request_id})

    async def model(self, request: Request) -> Response:
        """GET /v1/models/{model}: GetModel."""
        options = self._options(request)
        name = request.path_params["model"]
        if name == AUTO:
            return JSONResponse(model_card(None))
        reply = await self.gateway.registry.GetModel(
            rpb.GetModelRequest(name=name), metadata=options.metadata, timeout=options.timeout
        )
        return JSONResponse(model_card(reply.model), headers={REQUEST_ID_KEY: options.request_id})

    async def chat_completions(self, request: Request) -> Response:
        """POST /v1/chat/completions: Chat, or StreamChat when `stream`."""
        body = _parse(await request.body(), ChatCompletionBody)
        return await self._generate(request, chat_generation(body), chat=True)

    async def completions(self, request: Request) -> Response:
        """POST /v1/completions: Complete, or StreamComplete when `stream`."""
        body = _parse(await request.body(), CompletionBody)
        return await self._generate(request, completion_generation(body), chat=False)

    async def _generate(self, request: Request, generation: Generation, chat: bool) -> Response:
        request.state.param_names = generation.param_names
        options = self._options(request)
        stub = self.gateway.llm
        if not generation.stream:
            request_type, rpc = (llm.ChatRequest, stub.Chat) if chat else (llm.CompleteRequest, stub.Complete)
            call = rpc(request_type(**generation.fields), metadata=options.metadata, timeout=options.timeout)
            reply = await unless_disconnected(request.receive, call, call)
            return JSONResponse(completion(reply, chat), headers=_headers(options, reply.selection))
        stream_type, stream_rpc = (
            (llm.StreamChatRequest, stub.StreamChat) if chat else (llm.StreamCompleteRequest, stub.StreamComplete)
        )
        stream = stream_rpc(stream_type(**generation.fields), metadata=options.metadata, timeout=options.timeout)
        first = await unless_disconnected(request.receive, stream, stream.read())
        if first is grpc.aio.EOF:
            raise OpenAIError(502, "the gateway ended the stream without a message", code="empty_stream")
        chunks = StreamChunks(first.selection.model, chat, generation.include_usage)
        return EventStream(stream, first, chunks, _headers(options, first.selection), generation.param_names)

    async def embeddings(self, request: Request) -> Response:
        """POST /v1/embeddings: Embed."""
        body = _parse(await request.body(), EmbeddingBody)
        embed = embed_request(body)
        request.state.param_names = {"texts": "input"}
        options = self._options(request)
        call = self.gateway.nlp.Embed(embed, metadata=options.metadata, timeout=options.timeout)
        reply = await unless_disconnected(request.receive, call, call)
        return JSONResponse(
            embeddings(reply, body.encoding_format or "float"), headers=_headers(options, reply.selection)
        )


async def _openai_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpenAIError)
    return error_response(exc)


async def _status_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, grpc.aio.AioRpcError)
    return error_response(from_status(exc, getattr(request.state, "param_names", {})))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message, code = f"unknown request URL: {request.method} {request.url.path}", "unknown_url"
    else:
        message, code = f"{request.method} {request.url.path}: {exc.detail}", "method_not_allowed"
    return error_response(OpenAIError(exc.status_code, message, code=code))


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nobody reads it: the connection is closed


async def _internal_error(request: Request, exc: Exception) -> Response:
    request_id = getattr(request.state, "request_id", "-")
    log.error("%s %s failed unexpectedly (request id %s)", request.method, request.url.path, request_id, exc_info=exc)
    message = f"internal error (request id {request_id}); the server logged the details"
    return error_response(OpenAIError(500, message, code="internal"))


def build_app(
    gateway_target: str,
    peer: Peer = PLAINTEXT,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Starlette:
    """The OpenAI-compatible app in front of the gateway at `gateway_target` (a gRPC target, `ipv4:a,b` for
    replicas), reached as `peer` without a key of its own: each call carries its caller's. Request bodies over
    max_message_bytes are refused (413); every gateway call has a timeout_s deadline. The web console (/console)
    is served beside the API, over the same gateway client, keys, limits and error mapping."""
    # The console builds on this package's plumbing: imported here so that either package may be imported first.
    from facade.console.routes import console_routes

    gateway = GatewayClient(gateway_target, peer, max_message_bytes, timeout_s)
    routes = OpenAIRoutes(gateway)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        gateway.open()  # inside the serving loop: a grpc.aio channel belongs to the loop that makes it
        try:
            yield
        finally:
            await gateway.close()

    return Starlette(
        routes=[
            Route("/health", routes.health, methods=["GET"]),
            Route("/health/live", routes.live, methods=["GET"]),
            Route("/v1/models", routes.models, methods=["GET"]),
            Route("/v1/models/{model:path}", routes.model, methods=["GET"]),
            Route("/v1/chat/completions", routes.chat_completions, methods=["POST"]),
            Route("/v1/completions", routes.completions, methods=["POST"]),
            Route("/v1/embeddings", routes.embeddings, methods=["POST"]),
            *console_routes(gateway),
        ],
        middleware=[Middleware(TraceRequests), Middleware(BodyLimit, max_bytes=max_message_bytes)],
        exception_handlers={
            OpenAIError: _openai_error,
            grpc.aio.AioRpcError: _status_error,
            HTTPException: _http_error,
            ClientGone: _client_gone,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
