"""Long-lived channels to the mesh services (round_robin over replicas), per-model health, forwarding calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from aisemble.errors import ModelNotReadyError, UnavailableError
from aisemble.rpc.auth import current_principal
from aisemble.rpc.client import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ON_BEHALF_OF_KEY,
    PLAINTEXT,
    Peer,
    error_from_call,
    forwardable_metadata,
    open_channel,
    target_for,
)
from aisemble.rpc.telemetry import end_span, start_span

__all__ = ["Router", "Upstream"]

log = logging.getLogger(__name__)


class Upstream:
    """One mesh service: a single long-lived channel balancing over its replicas with round_robin.

    Client-side health checking (healthCheckConfig) takes a replica that is NOT_SERVING (draining,
    loading) out of rotation; a replica that refuses connections is skipped by round_robin itself.
    """

    def __init__(
        self,
        name: str,
        addresses: Iterable[str],
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        peer: Peer = PLAINTEXT,
    ) -> None:
        self.name = name
        self.addresses = tuple(addresses)
        self.channel = open_channel(target_for(self.addresses), max_message_bytes, balanced=True, peer=peer)
        self._callables: dict[str, Any] = {}

    def callable(self, path: str, kind: str, serializer: Callable[..., bytes], deserializer: Callable[..., Any]) -> Any:
        """A cached multi-callable for a method path ('unary_unary', 'unary_stream', 'stream_stream', ...)."""
        key = f"{kind}:{path}"
        if key not in self._callables:
            factory = getattr(self.channel, kind)
            self._callables[key] = factory(path, request_serializer=serializer, response_deserializer=deserializer)
        return self._callables[key]

    def error(self, exc: grpc.aio.AioRpcError) -> Exception:
        """Our error for a failed call to this service."""
        return error_from_call(exc, self.name, self.addresses)

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()


def _upstream_span(upstream: Upstream, path: str) -> Span:
    service, _, method = path.lstrip("/").partition("/")
    return start_span(
        f"upstream {path.lstrip('/')}",
        kind=SpanKind.CLIENT,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
            "aisemble.upstream": upstream.name,
        },
    )


async def _relay(upstream: Upstream, call: Any, forwarding: Span) -> AsyncIterator[Any]:
    """The replies of a streaming call as they come; its failure as our error; the call cancelled when we stop;
    its upstream span ended with the call."""
    code = "CANCELLED"
    try:
        async for reply in call:
            yield reply
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
        raise upstream.error(exc) from None
    finally:
        call.cancel()
        end_span(forwarding, code=code)


class Router:
    """Upstreams by service name, and the health of every model they host (from grpc.health.v1 Watch)."""

    def __init__(self, upstreams: dict[str, Upstream], forward_metadata: frozenset[str] = frozenset()) -> None:
        self.upstreams = upstreams
        self.forward_metadata = forward_metadata
        self.model_health: dict[str, str] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}

    def upstream(self, service: str) -> Upstream:
        """The upstream of a service, or UNAVAILABLE when the mesh has none configured."""
        upstream = self.upstreams.get(service)
        if upstream is None:
            raise UnavailableError(
                f"no '{service}' service is configured in the mesh", reason="SERVICE_NOT_CONFIGURED", retry_after_s=5.0
            )
        return upstream

    def health_of(self, model: str) -> str:
        """SERVING, NOT_SERVING or UNKNOWN (no answer yet)."""
        return self.model_health.get(model, "UNKNOWN")

    def check_routable(self, model: str, service: str) -> None:
        """UNAVAILABLE (with RetryInfo) when the service says the model is not loaded."""
        if self.health_of(model) == "NOT_SERVING":
            raise ModelNotReadyError(model, f"not loaded on the {service} service")

    def watch_model(self, model: str, service: str) -> None:
        """Follow a model's health on its service (idempotent)."""
        if model in self._watchers or service not in self.upstreams:
            return
        self._watchers[model] = asyncio.create_task(self._watch(model, self.upstreams[service]))

    def unwatch_model(self, model: str) -> None:
        """Stop following a model."""
        task = self._watchers.pop(model, None)
        if task is not None:
            task.cancel()
        self.model_health.pop(model, None)

    async def _watch(self, model: str, upstream: Upstream) -> None:
        stub = health_pb2_grpc.HealthStub(upstream.channel)
        delay = 0.5
        while True:
            try:
                call = stub.Watch(health_pb2.HealthCheckRequest(service=model))
                async for reply in call:
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                    self.model_health[model] = "SERVING" if status == "SERVING" else "NOT_SERVING"
                    delay = 0.5
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError:
                # The replica that answered went away; another may serve it. Calls go through (the channel
                # finds a live replica or fails with UNAVAILABLE); `auto` waits for a SERVING answer.
                self.model_health[model] = "UNKNOWN"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        """Stop the health watchers and close every channel."""
        for task in self._watchers.values():
            task.cancel()
        for task in self._watchers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for upstream in self.upstreams.values():
            await upstream.close()

    # --- calls of the gateway's own (automatic selection's features) ---
    async def call(self, service: str, path: str, request: Any, response_type: Any, timeout: float) -> Any:
        """A unary call of the gateway's own to a mesh service (AioRpcError when it fails)."""
        upstream = self.upstream(service)
        method = upstream.callable(path, "unary_unary", type(request).SerializeToString, response_type.FromString)
        return await method(request, timeout=timeout)

    # --- forwarding ---
    def _metadata(self, context: aio.ServicerContext) -> list[tuple[str, str | bytes]]:
        """What a forwarded call carries: the allowlisted caller metadata and, instead of the caller's key, whose
        call it is (so a composer calling back through the gateway acts with the caller's rights)."""
        forwarded = [(k, v) for k, v in forwardable_metadata(context, self.forward_metadata) if k != ON_BEHALF_OF_KEY]
        forwarded.append((ON_BEHALF_OF_KEY, current_principal.get().key_id))
        return forwarded

    async def unary(
        self, upstream: Upstream, path: str, request: Any, response_type: Any, context: aio.ServicerContext
    ) -> Any:
        """Forward a unary call with the caller's remaining deadline and metadata."""
        call = upstream.callable(path, "unary_unary", type(request).SerializeToString, response_type.FromString)
        return await self._one_reply(upstream, path, call, request, context)

    def server_stream(
        self, upstream: Upstream, path: str, request: Any, response_type: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Forward a server-streaming call message by message (no buffering); cancelling ours cancels theirs."""
        method = upstream.callable(path, "unary_stream", type(request).SerializeToString, response_type.FromString)
        return self._replies(upstream, path, method, request, context)

    def bidi_stream(
        self,
        upstream: Upstream,
        path: str,
        requests: AsyncIterator[Any],
        request_type: Any,
        response_type: Any,
        context: aio.ServicerContext,
    ) -> AsyncIterator[Any]:
        """Forward a bidirectional stream; flow control is end to end (gRPC's own windows)."""
        method = upstream.callable(path, "stream_stream", request_type.SerializeToString, response_type.FromString)
        return self._replies(upstream, path, method, requests, context)

    async def client_stream(
        self,
        upstream: Upstream,
        path: str,
        requests: AsyncIterator[Any],
        request_type: Any,
        response_type: Any,
        context: aio.ServicerContext,
    ) -> Any:
        """Forward a client-streaming call (e.g. a file upload) chunk by chunk."""
        method = upstream.callable(path, "stream_unary", request_type.SerializeToString, response_type.FromString)
        return await self._one_reply(upstream, path, method, requests, context)

    async def _one_reply(
        self, upstream: Upstream, path: str, method: Any, argument: Any, context: aio.ServicerContext
    ) -> Any:
        """Call `method` (unary or client-streaming) with the caller's deadline and metadata, in its upstream span;
        its failure as our error."""
        forwarding = _upstream_span(upstream, path)
        code = "CANCELLED"
        try:
            with trace.use_span(forwarding, end_on_exit=False):
                response = await method(argument, timeout=context.time_remaining(), metadata=self._metadata(context))
            code = "OK"
            return response
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            raise upstream.error(exc) from None
        finally:
            end_span(forwarding, code=code)

    def _replies(
        self, upstream: Upstream, path: str, method: Any, argument: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Start `method` (server-streaming or bidirectional) with the caller's deadline and metadata, in its
        upstream span (ended with the call, by _relay)."""
        forwarding = _upstream_span(upstream, path)
        with trace.use_span(forwarding, end_on_exit=False):
            call = method(argument, timeout=context.time_remaining(), metadata=self._metadata(context))
        return _relay(upstream, call, forwarding)
