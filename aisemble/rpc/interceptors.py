"""Server interceptors: the one place exceptions become gRPC statuses (with per-RPC metrics), and the call limits."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.rpc import status_pb2
from grpc import aio

from aisemble.errors import AisembleError, ResourceExhaustedError
from aisemble.rpc.client import REQUEST_ID_KEY
from aisemble.rpc.metrics import RpcMetrics
from aisemble.rpc.status import STATUS_DETAILS_KEY, grpc_code, internal_status, to_rpc_status

__all__ = ["CallLimitInterceptor", "ErrorAndMetricsInterceptor", "WrappingInterceptor", "stream_of"]

log = logging.getLogger(__name__)


def _request_id(context: aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and value:
            return value[:128]
    return uuid.uuid4().hex


async def _abort(context: aio.ServicerContext, status: status_pb2.Status) -> None:
    code = grpc_code(status.code)
    trailers = (*tuple(context.trailing_metadata() or ()), (STATUS_DETAILS_KEY, status.SerializeToString()))
    await context.abort(code, status.message, trailing_metadata=trailers)


class _Outcome:
    """Tracks how one RPC ended, for metrics."""

    def __init__(self) -> None:
        self.code = "OK"


async def _handle_exception(exc: Exception, context: aio.ServicerContext, method: str, outcome: _Outcome) -> None:
    """Map exc to a status and abort; an abort already under way is re-raised as it is."""
    if isinstance(exc, aio.AbortError):
        code = context.code()
        outcome.code = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        raise exc
    if isinstance(exc, AisembleError):
        outcome.code = exc.code.name
        log.info("%s -> %s: %s", method, exc.code.name, exc.message)
        await _abort(context, to_rpc_status(exc))
        return
    if isinstance(exc, NotImplementedError):  # the generated base servicer's answer for a missing method
        outcome.code = "UNIMPLEMENTED"
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by this server")
        return
    request_id = _request_id(context)
    outcome.code = "INTERNAL"
    log.error("%s failed unexpectedly (request id %s)", method, request_id, exc_info=exc)
    await _abort(context, internal_status(request_id))


class WrappingInterceptor(aio.ServerInterceptor):
    """An interceptor that wraps each handler's behaviour: subclasses give wrap_unary and wrap_stream."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.response_streaming:
            behavior = handler.unary_stream or handler.stream_stream
            wrapped_stream = self.wrap_stream(method, behavior)
            factory = (
                grpc.stream_stream_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_stream_rpc_method_handler
            )
            return factory(wrapped_stream, handler.request_deserializer, handler.response_serializer)
        behavior = handler.unary_unary or handler.stream_unary
        wrapped_unary = self.wrap_unary(method, behavior)
        factory = (
            grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
        )
        return factory(wrapped_unary, handler.request_deserializer, handler.response_serializer)

    def wrap_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        """A unary (or client-streaming) behaviour wrapped."""
        raise NotImplementedError

    def wrap_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        """A server-streaming (or bidirectional) behaviour wrapped."""
        raise NotImplementedError


async def stream_of(
    behavior: Callable[..., Any], request: Any, context: aio.ServicerContext
) -> AsyncGenerator[Any, None]:
    """The replies of a streaming behaviour, whether it is an async generator or a coroutine using context.write();
    the generator is closed when this ends (its finally blocks run now, not at GC)."""
    result = behavior(request, context)
    if not inspect.isasyncgen(result):
        await result
        return
    try:
        async for response in result:
            yield response
    finally:
        await result.aclose()


class ErrorAndMetricsInterceptor(WrappingInterceptor):
    """Wraps every handler: domain errors -> rich status, anything else -> INTERNAL without a traceback.

    Also sets the request id trailer and records requests, latency and errors by code.
    """

    def __init__(self, metrics: RpcMetrics | None = None) -> None:
        self._metrics = metrics

    def _finish(self, method: str, outcome: _Outcome, started: float) -> None:
        if self._metrics is not None:
            self._metrics.observe(method, outcome.code, time.perf_counter() - started)

    def wrap_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            started, outcome = time.perf_counter(), _Outcome()
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:
                outcome.code = "CANCELLED"
                raise
            except Exception as exc:  # noqa: BLE001 - every exception is mapped to a status here
                await _handle_exception(exc, context, method, outcome)
                return None
            finally:
                self._finish(method, outcome, started)

        return unary

    def wrap_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            started, outcome = time.perf_counter(), _Outcome()
            replies = stream_of(behavior, request, context)
            try:
                async for response in replies:
                    yield response
            except (asyncio.CancelledError, GeneratorExit):
                outcome.code = "CANCELLED"
                raise
            except Exception as exc:  # noqa: BLE001 - every exception is mapped to a status here
                await _handle_exception(exc, context, method, outcome)
            finally:
                await replies.aclose()
                self._finish(method, outcome, started)

        return stream


#: Services whose calls no limit counts: health must answer while the server is at its limits.
_UNLIMITED_SERVICES = ("/grpc.health.v1.Health/",)


class CallLimitInterceptor(WrappingInterceptor):
    """Separate limits for unary and streaming calls in flight: long-lived streams (WatchModels, token streams)
    can never lock out unary calls, and health checks count against neither. Over a limit: RESOURCE_EXHAUSTED."""

    def __init__(self, max_unary: int | None, max_streams: int | None) -> None:
        self.max_unary = max_unary
        self.max_streams = max_streams
        self.unary_in_flight = 0
        self.streams_in_flight = 0

    @staticmethod
    def _refusal(kind: str, limit: int) -> ResourceExhaustedError:
        return ResourceExhaustedError(
            f"this server already has {limit} {kind} in flight (its limit); retry shortly",
            reason="TOO_MANY_CONCURRENT_CALLS",
            metadata={"kind": kind, "limit": str(limit)},
            retry_after_s=1.0,
        )

    def wrap_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        if self.max_unary is None or method.startswith(_UNLIMITED_SERVICES):
            return behavior  # type: ignore[no-any-return]
        limit = self.max_unary

        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            if self.unary_in_flight >= limit:
                raise self._refusal("unary calls", limit)
            self.unary_in_flight += 1
            try:
                return await behavior(request, context)
            finally:
                self.unary_in_flight -= 1

        return unary

    def wrap_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        if self.max_streams is None or method.startswith(_UNLIMITED_SERVICES):
            return behavior  # type: ignore[no-any-return]
        limit = self.max_streams

        async def stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            if self.streams_in_flight >= limit:
                raise self._refusal("streams", limit)
            self.streams_in_flight += 1
            replies = stream_of(behavior, request, context)
            try:
                async for response in replies:
                    yield response
            finally:
                self.streams_in_flight -= 1
                await replies.aclose()

        return stream
