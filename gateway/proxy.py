"""The gateway's public services: resolve the model (by name or `auto`), answer from cache, or forward and record."""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from grpc import aio

from aisemble.common.v1 import common_pb2
from aisemble.config.models import ModelSpec
from aisemble.errors import FailedPreconditionError, InvalidArgumentError
from aisemble.nlp.v1 import nlp_service_pb2
from aisemble.rpc.selection import MODEL_TRAILER
from gateway.cache import ResultCache, cache_key
from gateway.registry import ModelRegistry
from gateway.router import Router
from gateway.routes import PUBLIC_SERVICES, ROUTES, Route
from gateway.rules import SelectionRules
from gateway.selector import AUTO, Candidate, Decision, Features, detect_domain, guess_language, select
from gateway.stats import StatsBook

__all__ = ["MODEL_TRAILER", "REASON_TRAILER", "Gateway", "Resolution"]

log = logging.getLogger(__name__)

REASON_TRAILER = "aisemble-selection-reason"
_FEATURE_TIMEOUT_S = 1.0  # the language detector and learned router get at most this much


@dataclass(frozen=True)
class Resolution:
    """Which model serves a call, as the caller will see it in `selection`."""

    spec: ModelSpec
    selection: common_pb2.ModelSelection
    decision: Decision | None = None


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe=" ,;:()'=./-_<>~")


class Gateway:
    """Serves the public services of every area through one generic, descriptor-driven handler per RPC."""

    def __init__(
        self,
        registry: ModelRegistry,
        router: Router,
        rules: SelectionRules,
        cache: ResultCache | None = None,
        stats: StatsBook | None = None,
    ) -> None:
        self.registry = registry
        self.router = router
        self.rules = rules
        self.cache = cache or ResultCache()
        self.stats = stats or StatsBook()

    # --- model resolution and automatic selection ---
    def candidates(self, task: str) -> list[Candidate]:
        """Registered models of the task, with their health and observed latency."""
        return [
            Candidate(spec, self.router.health_of(spec.name) == "SERVING", self.stats.get(spec.name).percentile(50))
            for spec in self.registry.all()
            if spec.task == task
        ]

    async def _detect_language(self, text: str, hint: str) -> tuple[str, str]:
        if hint:
            return hint, "hint"
        detector = self.registry.find(self.rules.language_detector)
        if detector is not None and text.strip() and self.router.health_of(detector.name) == "SERVING":
            try:
                reply = await self._nlp_unary(
                    detector.service,
                    "DetectLanguage",
                    nlp_service_pb2.DetectLanguageRequest(model=detector.name, texts=[text[:2000]]),
                    nlp_service_pb2.DetectLanguageResponse,
                )
                result = reply.results[0]
                if result.language_code and result.language_code != "und":
                    return result.language_code, f"{detector.name} {result.score:.2f}"
            except Exception as exc:  # noqa: BLE001 - selection falls back to the heuristic
                log.debug("language detection for auto failed: %s", exc)
        guess = guess_language(text)
        return guess, "script heuristic"

    async def _learned_domain(self, text: str) -> tuple[str, str] | None:
        name = self.rules.learned_router_model
        model = self.registry.find(name) if name else None
        if model is None or not text.strip() or self.router.health_of(name) != "SERVING":
            return None
        try:
            reply = await self._nlp_unary(
                model.service,
                "Classify",
                nlp_service_pb2.ClassifyRequest(model=name, texts=[text[:2000]]),
                nlp_service_pb2.ClassifyResponse,
            )
            top = reply.results[0].labels[0]
        except Exception as exc:  # noqa: BLE001 - selection falls back to the patterns
            log.debug("learned router failed: %s", exc)
            return None
        if top.score < self.rules.learned_router_min_score:
            return None
        return top.label, f"learned router {name} {top.score:.2f}"

    async def _nlp_unary(self, service: str, method: str, request: Any, response_type: Any) -> Any:
        upstream = self.router.upstream(service)
        call = upstream.callable(
            f"/aisemble.nlp.v1.NlpService/{method}",
            "unary_unary",
            type(request).SerializeToString,
            response_type.FromString,
        )
        return await call(request, timeout=_FEATURE_TIMEOUT_S)

    async def features(self, task: str, text: str, output_tokens: int | None, language_hint: str = "") -> Features:
        """Domain, language and token budget of a request, for the selector."""
        learned = await self._learned_domain(text)
        domain, domain_source = learned if learned else detect_domain(text, self.rules)
        language, language_source = await self._detect_language(text, language_hint) if text else ("", "")
        return Features(
            task=task,
            text=text,
            domain=domain,
            domain_source=domain_source,
            language=language,
            language_source=language_source,
            prompt_tokens=len(text.encode()) // 4 + 8,
            # Only generation produces tokens; other tasks need room for their input only.
            output_tokens=(output_tokens or self.rules.default_output_tokens) if task == "text-generation" else 0,
        )

    async def decide(
        self, task: str, text: str, output_tokens: int | None, language_hint: str = ""
    ) -> tuple[Decision, Features]:
        """The selector's decision for `auto` (also what ResolveModel returns)."""
        features = await self.features(task, text, output_tokens, language_hint)
        return select(features, self.candidates(task), self.rules), features

    async def resolve(self, route: Route, request: Any) -> Resolution:
        """The model that serves this request: by name, the route's default, or the selector's choice."""
        task = route.task_for(request)
        assert task is not None
        name = request.model or route.default_model
        if not name:
            raise InvalidArgumentError.for_field("model", "is required: a registry model name, or 'auto'")
        if name == AUTO:
            text = route.text(request) if route.text else ""
            output_tokens = route.output_tokens(request) if route.output_tokens else None
            decision, _features = await self.decide(task, text, output_tokens)
            spec = self.registry.get(decision.model)
            selection = common_pb2.ModelSelection(
                model=spec.name, model_version=spec.version, automatic=True, reason=decision.reason, rule=decision.rule
            )
            return Resolution(spec, selection, decision)
        spec = self.registry.get(name)
        compatible = {task} | ({"text-classification"} if task == "embedding" else set())
        if spec.task not in compatible:
            raise FailedPreconditionError(
                f"model '{name}' serves {spec.task}; this call needs a {task} model",
                reason="WRONG_TASK",
                metadata={"model": name, "task": spec.task, "needed": task},
            )
        self.router.check_routable(spec.name, spec.service)
        return Resolution(
            spec, common_pb2.ModelSelection(model=spec.name, model_version=spec.version, reason="requested by name")
        )

    # --- handlers ---
    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        """One generic handler per public service, every method built from the contract's descriptor."""
        pool = descriptor_pool.Default()
        handlers = []
        for service_name, default_service in PUBLIC_SERVICES.items():
            service = pool.FindServiceByName(service_name)
            methods = {}
            for method in service.methods:
                path = f"/{service_name}/{method.name}"
                request_type = GetMessageClass(method.input_type)
                response_type = GetMessageClass(method.output_type)
                route = ROUTES.get(path, Route(default_service))
                methods[method.name] = self._method_handler(path, route, method, request_type, response_type)
            handlers.append(grpc.method_handlers_generic_handler(service_name, methods))
        return handlers

    def _method_handler(self, path: str, route: Route, method: Any, request_type: Any, response_type: Any) -> Any:
        serialize, deserialize = response_type.SerializeToString, request_type.FromString
        if method.client_streaming and method.server_streaming:
            return grpc.stream_stream_rpc_method_handler(
                lambda requests, context: self._bidi(path, route, requests, request_type, response_type, context),
                deserialize,
                serialize,
            )
        if method.client_streaming:
            return grpc.stream_unary_rpc_method_handler(
                lambda requests, context: self.router.client_stream(
                    self.router.upstream(route.service), path, requests, request_type, response_type, context
                ),
                deserialize,
                serialize,
            )
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(
                lambda request, context: self._server_stream(path, route, request, response_type, context),
                deserialize,
                serialize,
            )
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: self._unary(path, route, request, response_type, context), deserialize, serialize
        )

    def _prepare(self, route: Route, request: Any, resolution: Resolution) -> Any:
        if request.model == resolution.spec.name:
            return request
        rewritten = type(request)()
        rewritten.CopyFrom(request)
        rewritten.model = resolution.spec.name
        return rewritten

    def _key(self, path: str, route: Route, request: Any, resolution: Resolution) -> str | None:
        if route.cacheable is None or not route.cacheable(request):
            return None
        return cache_key(
            path, request.SerializeToString(deterministic=True), resolution.spec.name, resolution.spec.version
        )

    @staticmethod
    def _annotate(response: Any, resolution: Resolution) -> None:
        if "selection" in response.DESCRIPTOR.fields_by_name:
            response.selection.CopyFrom(resolution.selection)

    @staticmethod
    def _trailers(context: aio.ServicerContext, resolution: Resolution) -> None:
        context.set_trailing_metadata(
            ((MODEL_TRAILER, resolution.spec.name), (REASON_TRAILER, _quote(resolution.selection.reason)))
        )

    def _usage(self, response: Any) -> tuple[int, float]:
        if "usage" in response.DESCRIPTOR.fields_by_name and response.HasField("usage"):
            return response.usage.output_tokens, response.usage.cost
        return 0, 0.0

    async def _unary(
        self, path: str, route: Route, request: Any, response_type: Any, context: aio.ServicerContext
    ) -> Any:
        if route.task is None:
            return await self.router.unary(self.router.upstream(route.service), path, request, response_type, context)
        resolution = await self.resolve(route, request)
        upstream_request = self._prepare(route, request, resolution)
        key = self._key(path, route, upstream_request, resolution)
        cached = self.cache.get(key) if key else None
        if cached is not None:
            response = response_type.FromString(cached[0])
            self._annotate(response, resolution)
            self._trailers(context, resolution)
            return response
        started, ok = time.perf_counter(), False
        tokens, cost = 0, 0.0
        try:
            upstream = self.router.upstream(resolution.spec.service)
            response = await self.router.unary(upstream, path, upstream_request, response_type, context)
            tokens, cost = self._usage(response)
            ok = True
        finally:
            self.stats.record(resolution.spec.name, time.perf_counter() - started, ok, tokens, cost)
        if key:
            self.cache.put(key, (response.SerializeToString(),))
        self._annotate(response, resolution)
        self._trailers(context, resolution)
        return response

    async def _server_stream(
        self, path: str, route: Route, request: Any, response_type: Any, context: aio.ServicerContext
    ) -> AsyncIterator[Any]:
        if route.task is None:
            async for reply in self.router.server_stream(
                self.router.upstream(route.service), path, request, response_type, context
            ):
                yield reply
            return
        resolution = await self.resolve(route, request)
        upstream_request = self._prepare(route, request, resolution)
        key = self._key(path, route, upstream_request, resolution)
        cached = self.cache.get(key) if key else None
        if cached is not None:
            self._trailers(context, resolution)
            for index, raw in enumerate(cached):
                reply = response_type.FromString(raw)
                if index == 0:
                    self._annotate(reply, resolution)
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
                    self._annotate(reply, resolution)
                    first = False
                used, spent = self._usage(reply)
                tokens, cost = tokens + used, cost + spent
                yield reply
            ok = True
        finally:
            self.stats.record(resolution.spec.name, time.perf_counter() - started, ok, tokens, cost)
        if key and recorded:
            self.cache.put(key, tuple(recorded))
        self._trailers(context, resolution)

    async def _bidi(
        self,
        path: str,
        route: Route,
        requests: AsyncIterator[Any],
        request_type: Any,
        response_type: Any,
        context: aio.ServicerContext,
    ) -> AsyncIterator[Any]:
        iterator = requests.__aiter__()
        try:
            first_request = await iterator.__anext__()
        except StopAsyncIteration:
            return
        resolution = await self.resolve(route, first_request)
        first_upstream = self._prepare(route, first_request, resolution)

        async def upstream_requests() -> AsyncIterator[Any]:
            yield first_upstream
            async for later in iterator:
                yield later

        upstream = self.router.upstream(resolution.spec.service)
        started, ok = time.perf_counter(), False
        try:
            async for reply in self.router.bidi_stream(
                upstream, path, upstream_requests(), request_type, response_type, context
            ):
                yield reply
            ok = True
        finally:
            self.stats.record(resolution.spec.name, time.perf_counter() - started, ok)
        self._trailers(context, resolution)
