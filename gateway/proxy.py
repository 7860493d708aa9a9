"""The gateway's call path for every public RPC: resolve the model, answer from cache, or forward and record."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from grpc import aio

from aisemble.resolution import AUTO, RPC_TASKS
from aisemble.rpc.auth import Authenticator, current_principal
from aisemble.rpc.calls import current_call, note_model
from aisemble.rpc.selection import MODEL_TRAILER, REASON_TRAILER, quote_reason
from aisemble.rpc.telemetry import span
from gateway.cache import ResultCache, cache_key
from gateway.registry_view import RegistryView
from gateway.resolver import ModelResolver, Resolution
from gateway.router import Router
from gateway.routes import Route
from gateway.rules import SelectionRules
from gateway.stats import StatsBook

__all__ = ["Gateway"]


def _annotate(response: Any, resolution: Resolution) -> None:
    if "selection" in response.DESCRIPTOR.fields_by_name:
        response.selection.CopyFrom(resolution.selection)


def _trailers(context: aio.ServicerContext, resolution: Resolution) -> None:
    context.set_trailing_metadata(
        ((MODEL_TRAILER, resolution.spec.name), (REASON_TRAILER, quote_reason(resolution.selection.reason)))
    )


def _usage(response: Any) -> tuple[int, float]:
    if "usage" in response.DESCRIPTOR.fields_by_name and response.HasField("usage"):
        return response.usage.output_tokens, response.usage.cost
    return 0, 0.0


def _for_model(request: Any, resolution: Resolution) -> Any:
    """The request as the service gets it: naming the resolved model."""
    if request.model == resolution.spec.name:
        return request
    rewritten = type(request)()
    rewritten.CopyFrom(request)
    rewritten.model = resolution.spec.name
    return rewritten


class Gateway:
    """The public services' behaviour: a model is resolved (by name or `auto`), a deterministic result may come
    from the cache, everything else is forwarded to the hosting service and measured per model."""

    def __init__(
        self,
        registry: RegistryView,
        router: Router,
        rules: SelectionRules,
        cache: ResultCache | None = None,
        stats: StatsBook | None = None,
        authenticator: Authenticator | None = None,
        selection_max_chars: int = 4096,
        on_cache: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.registry = registry
        self.router = router
        self.cache = cache or ResultCache()
        self.stats = stats or StatsBook()
        self.authenticator = authenticator
        self.on_cache = on_cache  # told (model, hit) at each lookup, for the per-model cache metrics
        self.resolver = ModelResolver(registry, router, rules, self.stats, max_text_chars=selection_max_chars)

    async def _resolve(self, path: str, route: Route, request: Any) -> Resolution:
        """The model for a request, which the caller's key must allow (a named one before anything about it is
        looked up, an automatic choice once made)."""
        principal = current_principal.get()
        if request.model and request.model != AUTO:
            principal.check_model(request.model)
        with span("selection") as chosen:
            resolution = await self.resolver.resolve(path, route, request)
            selection = resolution.selection
            chosen.set_attributes(
                {
                    "aisemble.model": selection.model,
                    "aisemble.selection.automatic": selection.automatic,
                    "aisemble.selection.reason": selection.reason,
                    "aisemble.selection.rule": selection.rule,
                }
            )
        principal.check_model(resolution.spec.name)
        note_model(resolution.spec.name, selection.reason)
        return resolution

    def _cached(self, key: str | None, model: str) -> tuple[bytes, ...] | None:
        """The cache's answer for a cacheable request (None: none, or not cacheable), counted per model."""
        if key is None:
            return None
        with span("cache.lookup") as lookup:
            found = self.cache.get(key)
            lookup.set_attribute("aisemble.cache.hit", found is not None)
        call = current_call()
        if call is not None:
            call.cache = "miss" if found is None else "hit"
        if self.on_cache is not None:
            self.on_cache(model, found is not None)
        return found

    def _record(self, model: str, seconds: float, ok: bool, tokens: int = 0, cost: float = 0.0) -> None:
        self.stats.record(model, seconds, ok, tokens, cost)
        if self.authenticator is not None:
            self.authenticator.record_usage(tokens, cost)

    def _key(self, path: str, route: Route, request: Any, resolution: Resolution) -> str | None:
        if route.cacheable is None or not route.cacheable(request):
            return None
        return cache_key(
            path, request.SerializeToString(deterministic=True), resolution.spec.name, resolution.spec.version
        )

    async def unary(
        self, path: str, route: Route, request: Any, response_type: Any, context: aio.ServicerContext
    ) -> Any:
        """A unary call."""
        if path not in RPC_TASKS:
            return await self.router.unary(self.router.upstream(route.service), path, request, response_type, context)
        resolution = await self._resolve(path, route, request)
        upstream_request = _for_model(request, resolution)
        key = self._key(path, route, upstream_request, resolution)
        cached = self._cached(key, resolution.spec.name)
        if cached is not None:
            response = response_type.FromString(cached[0])
            _annotate(response, resolution)
            _trailers(context, resolution)
            return response
        started, ok = time.perf_counter(), False
        tokens, cost = 0, 0.0
        try:
            upstream = self.router.upstream(resolution.spec.service)
            response = await self.router.unary(upstream, path, upstream_request, response_type, context)
            tokens, cost = _usage(response)
            ok = True
        finally:
            self._record(resolution.spec.name, time.perf_counter() - started, ok, tokens, cost)
        if key:
            self.cache.put(key, (response.SerializeToString(),))
        _annotate(response, resolution)
        _trailers(context, resolution)
        return response

    async def server_stream(
        self, path: str, route: Route, request: Any, response_type: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """A server-streaming call, message by message (a cached stream is replayed)."""
        if path not in RPC_TASKS:
            async for reply in self.router.server_stream(
                self.router.upstream(route.service), path, request, response_type, context
            ):
                yield reply
            return
        resolution = await self._resolve(path, route, request)
        upstream_request = _for_model(request, resolution)
        key = self._key(path, route, upstream_request, resolution)
        cached = self._cached(key, resolution.spec.name)
        if cached is not None:
            _trailers(context, resolution)
            for index, raw in enumerate(cached):
                reply = response_type.FromString(raw)
                if index == 0:
                    _annotate(reply, resolution)
                yield reply
            return
        started, ok = time.perf_counter(), False
        tokens, cost = 0, 0.0
        recorded: list[bytes] = []
        first = True
        try:
            upstream = self.router.upstream(resolution.spec.service)
            async for reply in self.router.server_stream(upstream, path, upstream_request, response_type, context):
                if key:
                    recorded.append(reply.SerializeToString())
                if first:
                    _annotate(reply, resolution)
                    first = False
                used, spent = _usage(reply)
                tokens, cost = tokens + used, cost + spent
                yield reply
            ok = True
        finally:
            self._record(resolution.spec.name, time.perf_counter() - started, ok, tokens, cost)
        if key and recorded:
            self.cache.put(key, tuple(recorded))
        _trailers(context, resolution)

    async def bidi(
        self,
        path: str,
        route: Route,
        requests: AsyncIterator[Any],
        request_type: Any,
        response_type: Any,
        context: aio.ServicerContext,
    ) -> AsyncIterator[Any]:
        """A bidirectional stream: the first request names the model for the whole stream."""
        iterator = requests.__aiter__()
        try:
            first_request = await iterator.__anext__()
        except StopAsyncIteration:
            return
        resolution = await self._resolve(path, route, first_request)
        first_upstream = _for_model(first_request, resolution)

        async def upstream_requests() -> AsyncIterator[Any]:
            yield first_upstream
            async for later in iterator:
                yield later

        upstream = self.router.upstream(resolution.spec.service)
        started, ok = time.perf_counter(), False
        first = True
        try:
            async for reply in self.router.bidi_stream(
                upstream, path, upstream_requests(), request_type, response_type, context
            ):
                if first:
                    _annotate(reply, resolution)
                    first = False
                yield reply
            ok = True
        finally:
            self._record(resolution.spec.name, time.perf_counter() - started, ok)
        _trailers(context, resolution)

    async def client_stream(
        self,
        path: str,
        route: Route,
        requests: AsyncIterator[Any],
        request_type: Any,
        response_type: Any,
        context: aio.ServicerContext,
    ) -> Any:
        """A client-streaming call (an upload), forwarded chunk by chunk."""
        upstream = self.router.upstream(route.service)
        return await self.router.client_stream(upstream, path, requests, request_type, response_type, context)
