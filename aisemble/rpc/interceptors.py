"""Server interceptors: the one place exceptions become gRPC statuses and each call gets its span, metrics and access
line; the call limits; request checks."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind

from aisemble.errors import AisembleError, InvalidArgumentError, ResourceExhaustedError
from aisemble.rpc.calls import CallRecord, current_call, enter_call, leave_call
from aisemble.rpc.client import REQUEST_ID_KEY
from aisemble.rpc.logs import access_log_on, log_call, log_requests_on
from aisemble.rpc.metrics import RpcMetrics
from aisemble.rpc.status import STATUS_DETAILS_KEY, grpc_code, internal_status, to_rpc_status
from aisemble.rpc.telemetry import context_from_metadata, end_span, start_span, tracing_on
from aisemble.rpc.validation import check_request, holds_enums

__all__ = [
    "CallLimitInterceptor",
    "ErrorsAndTelemetryInterceptor",
    "RequestValidationInterceptor",
    "WrappingInterceptor",
    "stream_of",
]

log = logging.getLogger(__name__)


def _request_id_in(metadata: Any) -> str:
    """The caller's request id, or a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and value:
            return value[:128]
    return uuid.uuid4().hex


def _request_id(context: aio.ServicerContext) -> str:
    call = current_call()
    return call.request_id if call is not None else _request_id_in(context.invocation_metadata())


#: Bounds of a status in the trailers (UTF-8 bytes): a peer refuses trailers over its metadata limit (8 KiB by
#: default) and reads RESOURCE_EXHAUSTED "Stream removed" instead, so echoed input (a 300 KB model name) is clipped.
_MAX_MESSAGE_BYTES = 512
_MAX_TEXT_BYTES = 160
_MAX_DETAILS_BYTES = 2048


def _clip(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[: limit - 3].decode("utf-8", errors="ignore") + "..."


def _bounded(status: status_pb2.Status) -> status_pb2.Status:
    """The status with its message and details clipped to fit any peer's metadata limit (unchanged when small)."""
    if len(status.message.encode("utf-8")) <= _MAX_MESSAGE_BYTES and status.ByteSize() <= _MAX_DETAILS_BYTES:
        return status
    bounded = status_pb2.Status(code=status.code, message=_clip(status.message, _MAX_MESSAGE_BYTES))
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            metadata = {_clip(k, 64): _clip(v, _MAX_TEXT_BYTES) for k, v in list(info.metadata.items())[:8]}
            kept: Message = error_details_pb2.ErrorInfo(reason=info.reason[:64], domain=info.domain, metadata=metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            kept = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_clip(v.field, _MAX_TEXT_BYTES), description=_clip(v.description, _MAX_TEXT_BYTES)
                    )
                    for v in bad.field_violations[:8]
                ]
            )
        elif detail.ByteSize() <= _MAX_TEXT_BYTES:  # RetryInfo and other small details, as they are
            bounded.details.add().CopyFrom(detail)
            continue
        else:
            continue
        if bounded.ByteSize() + kept.ByteSize() < _MAX_DETAILS_BYTES:
            bounded.details.add().Pack(kept)
    return bounded


async def _abort(context: aio.ServicerContext, status: status_pb2.Status) -> None:
    status = _bounded(status)
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

    def wrap_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        """A server-streaming (or bidirectional) behaviour wrapped: an async generator function, or a coroutine
        function that writes its replies with context.write()."""
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


#: Calls outside per-call telemetry (no span, no access line): health checks and reflection, polled all the time.
_UNOBSERVED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class _ObservedCall:
    """The telemetry of one RPC: its server span (child of the caller's traceparent), its CallRecord, and on
    finish its metrics and access line."""

    def __init__(self, interceptor: ErrorsAndTelemetryInterceptor, method: str, context: aio.ServicerContext):
        metadata = context.invocation_metadata() or ()
        self.interceptor = interceptor
        self.peer = context.peer() or ""  # read now: the call object may be gone by the time the call is finished
        span: Span = INVALID_SPAN
        if tracing_on():
            service, _, name = method.lstrip("/").partition("/")
            span = start_span(
                method.lstrip("/"),
                context_from_metadata(metadata),
                SpanKind.SERVER,
                {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            )
        self.record = CallRecord(method, _request_id_in(metadata), span)
        self._tokens = (otel_context.attach(trace.set_span_in_context(span)), enter_call(self.record))

    def finish(self, outcome: _Outcome, error: BaseException | None = None) -> None:
        record, seconds = self.record, time.perf_counter() - self.record.started
        leave_call(self._tokens[1])
        otel_context.detach(self._tokens[0])
        span = record.span
        if span.is_recording():
            span.set_attributes(_span_facts(record))
        end_span(span, error if outcome.code == "INTERNAL" else None, outcome.code)
        if self.interceptor.metrics is not None:
            self.interceptor.metrics.observe_call(record, outcome.code, seconds)
        if self.interceptor.access_log:
            log_call(record, outcome.code, seconds, self.peer)


#: Span attribute names of CallRecord.facts() (OpenTelemetry's gen_ai conventions where they have one).
_SPAN_ATTRIBUTES = {
    "model": "aisemble.model",
    "selection_reason": "aisemble.selection.reason",
    "cache": "aisemble.cache",
    "prompt_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cost": "aisemble.cost",
    "finish_reason": "gen_ai.response.finish_reasons",
    "first_token_ms": "aisemble.first_token_ms",
    "replies": "aisemble.replies",
}


def _span_facts(record: CallRecord) -> dict[str, Any]:
    facts: dict[str, Any] = {"aisemble.request_id": record.request_id}
    for name, value in record.facts().items():
        facts[_SPAN_ATTRIBUTES[name]] = (value,) if name == "finish_reason" else value
    return facts


class ErrorsAndTelemetryInterceptor(WrappingInterceptor):
    """The outermost interceptor: domain errors -> rich status, anything else -> INTERNAL without a traceback;
    and each call's telemetry: its server span (the caller's W3C trace context honoured), the CallRecord the
    code beneath fills, its RPC and per-model metrics, and its access line. Health checks get the mapping only.
    """

    def __init__(
        self, metrics: RpcMetrics | None = None, access_log: bool | None = None, log_requests: bool | None = None
    ) -> None:
        self.metrics = metrics
        self.access_log = access_log_on() if access_log is None else access_log
        self.log_requests = log_requests_on() if log_requests is None else log_requests

    def _finish(
        self, call: _ObservedCall | None, method: str, outcome: _Outcome, error: BaseException | None, started: float
    ) -> None:
        if call is not None:
            call.finish(outcome, error)
        elif self.metrics is not None:
            self.metrics.observe(method, outcome.code, time.perf_counter() - started)

    def wrap_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        observed = not method.startswith(_UNOBSERVED)

        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            started, outcome = time.perf_counter(), _Outcome()
            call = _ObservedCall(self, method, context) if observed else None
            error: BaseException | None = None
            if call is not None and self.log_requests and isinstance(request, Message):
                call.record.request = request
            try:
                response = await behavior(request, context)
                if call is not None and response is not None:
                    call.record.observe_reply(response)
                return response
            except asyncio.CancelledError:
                outcome.code = "CANCELLED"
                raise
            except Exception as exc:  # noqa: BLE001 - every exception is mapped to a status here
                error = exc
                await _handle_exception(exc, context, method, outcome)
                return None
            finally:
                self._finish(call, method, outcome, error, started)

        return unary

    def wrap_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
        observed = not method.startswith(_UNOBSERVED)

        async def stream(request: Any, context: aio.ServicerContext) -> None:
            # A coroutine that writes the replies, not a generator that yields them: gRPC drops a generator it
            # stops reading (a cancelled call) unclosed, to be finalised later in some other task; a coroutine
            # gets the call's cancellation here, in the call's own task, and closes the replies now.
            started, outcome = time.perf_counter(), _Outcome()
            call = _ObservedCall(self, method, context) if observed else None
            error: BaseException | None = None
            if call is not None and self.log_requests and isinstance(request, Message):
                call.record.request = request
            replies = stream_of(behavior, request, context)
            try:
                async for response in replies:
                    if call is not None:
                        call.record.observe_reply(response)
                    await context.write(response)
            except asyncio.CancelledError:
                outcome.code = "CANCELLED"
                raise
            except Exception as exc:  # noqa: BLE001 - every exception is mapped to a status here
                error = exc
                await _handle_exception(exc, context, method, outcome)
            finally:
                await replies.aclose()
                self._finish(call, method, outcome, error, started)

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


class _CheckedRequests:
    """A request stream whose every message is checked as it arrives. The first bad message is not passed on:
    whoever reads the stream (the servicer, or the gRPC call that forwards it upstream, which then cancels
    itself) gets its error, and the call ends with that error however the servicer then ends."""

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self._requests = requests.__aiter__()
        self.error: InvalidArgumentError | None = None

    def __aiter__(self) -> _CheckedRequests:
        return self

    async def __anext__(self) -> Any:
        if self.error is not None:
            raise self.error
        request = await self._requests.__anext__()
        try:
            check_request(request)
        except InvalidArgumentError as error:
            self.error = error
            raise
        return request


class RequestValidationInterceptor(WrappingInterceptor):
    """Checks every request before a servicer sees it (aisemble.rpc.validation.check_request: an enum number
    outside its enum is INVALID_ARGUMENT), each message of a request stream as it arrives. Sits inside the error
    mapping; methods whose request type can hold no enum are passed through untouched."""

    @staticmethod
    def _needs_checks(method: str) -> bool:
        try:
            found = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
        except KeyError:
            return True  # not in the default pool: check each message by its own descriptor
        return holds_enums(found.input_type)

    def wrap_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        if not self._needs_checks(method):
            return behavior  # type: ignore[no-any-return]

        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            if isinstance(request, Message):
                check_request(request)
                return await behavior(request, context)
            requests = _CheckedRequests(request)
            try:
                result = await behavior(requests, context)
            except (Exception, asyncio.CancelledError):
                if requests.error is None:
                    raise
                raise requests.error from None
            if requests.error is not None:
                raise requests.error
            return result

        return unary

    def wrap_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        if not self._needs_checks(method):
            return behavior  # type: ignore[no-any-return]

        async def stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Message):
                check_request(request)
                requests = None
            else:
                request = requests = _CheckedRequests(request)
            replies = stream_of(behavior, request, context)
            try:
                async for response in replies:
                    yield response
            except (Exception, asyncio.CancelledError):
                if requests is None or requests.error is None:
                    raise
                raise requests.error from None
            finally:
                await replies.aclose()
            if requests is not None and requests.error is not None:
                raise requests.error

        return stream
