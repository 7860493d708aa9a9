"""Which model serves a gateway call: by name (checked with the shared resolution rules) or `auto` (the selector)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aisemble.common.v1 import common_pb2
from aisemble.config.models import ModelSpec
from aisemble.errors import InvalidArgumentError
from aisemble.nlp.v1 import nlp_service_pb2
from aisemble.resolution import AUTO, Rpc, check_task
from aisemble.rpc.auth import current_principal
from gateway.decisions import RoutingLog
from gateway.registry_view import RegistryView
from gateway.router import Router
from gateway.routes import Route
from gateway.rules import SelectionRules
from gateway.selector import Candidate, Decision, Features, detect_domain, guess_language, select
from gateway.stats import StatsBook

__all__ = ["ModelResolver", "Resolution"]

log = logging.getLogger(__name__)

_FEATURE_TIMEOUT_S = 1.0  # the language detector and learned router get at most this much
DEFAULT_MAX_TEXT_CHARS = 4096  # how much of a request's text `auto` reads (mesh.yaml security.selection_max_chars)


@dataclass(frozen=True)
class Resolution:
    """Which model serves a call, as the caller will see it in `selection`."""

    spec: ModelSpec
    selection: common_pb2.ModelSelection
    decision: Decision | None = None


class ModelResolver:
    """Resolves the model of a request: the registry by name, or the selector's choice for `auto`.

    For `auto` it gathers the request's features: the domain (the learned router when it is registered and
    healthy, else the patterns of selection.yaml) and the language (the language detector, else a heuristic).
    All of them read only the first `max_text_chars` characters of the text (mesh.yaml
    security.selection_max_chars), so a huge prompt costs selection no more than a 4k one; the token estimate
    alone counts the whole text, as the whole prompt must fit the model's context window.
    """

    def __init__(
        self,
        registry: RegistryView,
        router: Router,
        rules: SelectionRules,
        stats: StatsBook,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    ) -> None:
        if max_text_chars < 1:
            raise ValueError(f"max_text_chars must be at least 1, not {max_text_chars}")
        self.registry = registry
        self.router = router
        self.rules = rules
        self.stats = stats
        self.max_text_chars = max_text_chars
        self.decisions = RoutingLog()  # the last `auto` resolutions of served calls (ListRoutingDecisions)

    def candidates(self, task: str) -> list[Candidate]:
        """Registered models of the task that the caller's key allows, with their health and observed latency."""
        principal = current_principal.get()
        return [
            Candidate(spec, self.router.health_of(spec.name) == "SERVING", self.stats.get(spec.name).percentile(50))
            for spec in self.registry.all()
            if spec.task == task and principal.allows_model(spec.name)
        ]

    async def _nlp(self, spec: ModelSpec, rpc: str, request: Any, response_type: Any) -> Any:
        return await self.router.call(spec.service, rpc, request, response_type, timeout=_FEATURE_TIMEOUT_S)

    async def _detect_language(self, text: str, hint: str) -> tuple[str, str]:
        if hint:
            return hint, "hint"
        detector = self.registry.find(self.rules.language_detector)
        if detector is not None and text.strip() and self.router.health_of(detector.name) == "SERVING":
            try:
                reply = await self._nlp(
                    detector,
                    Rpc.DETECT_LANGUAGE,
                    nlp_service_pb2.DetectLanguageRequest(model=detector.name, texts=[text]),
                    nlp_service_pb2.DetectLanguageResponse,
                )
                result = reply.results[0]
                if result.language_code and result.language_code != "und":
                    return result.language_code, f"{detector.name} {result.score:.2f}"
            except Exception as exc:  # noqa: BLE001 - selection falls back to the heuristic
                log.debug("language detection for auto failed: %s", exc)
        return guess_language(text), "script heuristic"

    async def _learned_domain(self, text: str) -> tuple[str, str] | None:
        name = self.rules.learned_router_model
        model = self.registry.find(name) if name else None
        if model is None or not text.strip() or self.router.health_of(name) != "SERVING":
            return None
        try:
            reply = await self._nlp(
                model,
                Rpc.CLASSIFY,
                nlp_service_pb2.ClassifyRequest(model=name, texts=[text]),
                nlp_service_pb2.ClassifyResponse,
            )
            top = reply.results[0].labels[0]
        except Exception as exc:  # noqa: BLE001 - selection falls back to the patterns
            log.debug("learned router failed: %s", exc)
            return None
        if top.score < self.rules.learned_router_min_score:
            return None
        return top.label, f"learned router {name} {top.score:.2f}"

    async def features(self, task: str, text: str, output_tokens: int | None, language_hint: str = "") -> Features:
        """Domain, language and token budget of a request, for the selector.

        The one place the text is capped: everything below reads `sample`, only the token estimate the whole.
        """
        sample = text[: self.max_text_chars]
        learned = await self._learned_domain(sample)
        domain, domain_source = learned if learned else detect_domain(sample, self.rules)
        if not sample:
            language, language_source = "", ""
        elif task == "language-detection" and not language_hint:
            # Choosing a language detector by the text's language would run a detector first: the call's own
            # model then detects it again. The script heuristic is enough to prefer a detector that lists it.
            language, language_source = guess_language(sample), "script heuristic"
        else:
            language, language_source = await self._detect_language(sample, language_hint)
        return Features(
            task=task,
            text=sample,
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

    async def resolve(self, rpc: str, route: Route, request: Any) -> Resolution:
        """The model that serves this request: by name, the route's default, or the selector's choice."""
        name = request.model or route.default_model
        if not name:
            raise InvalidArgumentError.for_field("model", "is required: a registry model name, or 'auto'")
        if name == AUTO:
            task = route.task_for(rpc, request)
            text = route.text(request) if route.text else ""
            output_tokens = route.output_tokens(request) if route.output_tokens else None
            decision, features = await self.decide(task, text, output_tokens)
            spec = self.registry.get(decision.model)
            selection = common_pb2.ModelSelection(
                model=spec.name, model_version=spec.version, automatic=True, reason=decision.reason, rule=decision.rule
            )
            self.decisions.record(rpc, selection, decision, features)
            return Resolution(spec, selection, decision)
        spec = self.registry.get(name)  # MODEL_NOT_FOUND
        check_task(spec, rpc)  # MODEL_WRONG_TASK, the same check every service makes
        self.router.check_routable(spec.name, spec.service)
        return Resolution(
            spec, common_pb2.ModelSelection(model=spec.name, model_version=spec.version, reason="requested by name")
        )
