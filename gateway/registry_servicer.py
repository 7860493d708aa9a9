"""The gateway's ModelRegistryService: the registry's contract over its followed view, with live health and
figures, writes forwarded to the registry service, and model selection (ResolveModel)."""

from __future__ import annotations

from grpc import aio

from aisemble.common.v1 import common_pb2
from aisemble.config.models import ModelSpec
from aisemble.errors import InvalidArgumentError
from aisemble.registry.v1 import registry_service_pb2 as pb
from aisemble.resolution import AUTO
from aisemble.rpc.auth import current_principal
from aisemble.rpc.registry_messages import TASK_FROM_PROTO, TASK_TO_PROTO, model_to_proto
from aisemble.rpc.registry_servicer import RegistryServicer
from gateway.decisions import RoutingDecision
from gateway.proxy import Gateway
from gateway.selector import Decision

__all__ = ["GatewayRegistryServicer"]


def _candidates(decision: Decision) -> list[pb.Candidate]:
    """The verdicts a caller sees (not the task filter's: every other model 'serves' another task)."""
    return [
        pb.Candidate(model=c.model, eligible=c.eligible, score=c.score, reason=c.reason)
        for c in decision.candidates
        if not c.reason.startswith("serves ")
    ]


def _decision_to_proto(kept: RoutingDecision) -> pb.RoutingDecision:
    message = pb.RoutingDecision(
        method=kept.method,
        task=TASK_TO_PROTO[kept.task],
        selection=kept.selection,
        detected_domain=kept.domain,
        domain_source=kept.domain_source,
        detected_language=kept.language,
        candidates=_candidates(kept.decision),
    )
    message.time.FromNanoseconds(int(kept.time * 1e9))
    return message


class GatewayRegistryServicer(RegistryServicer):
    """Reads from the gateway's view of the registry (it keeps serving while the registry service is away);
    RegisterModel and DeregisterModel go to the registry service (UNAVAILABLE while it is away)."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway.registry)
        self.gateway = gateway

    def describe(self, spec: ModelSpec) -> pb.Model:
        return model_to_proto(spec, self.gateway.router.health_of(spec.name), self.gateway.stats.get(spec.name))

    async def ResolveModel(
        self, request: pb.ResolveModelRequest, context: aio.ServicerContext
    ) -> pb.ResolveModelResponse:
        if request.task == common_pb2.TASK_UNSPECIFIED or request.task not in TASK_FROM_PROTO:
            raise InvalidArgumentError.for_field("task", "is required: the task to select a model for")
        task = TASK_FROM_PROTO[request.task]
        output_tokens = request.max_output_tokens if request.HasField("max_output_tokens") else None
        if request.model and request.model != AUTO:
            current_principal.get().check_model(request.model)
            spec = self.catalogue.get(request.model)
            selection = common_pb2.ModelSelection(
                model=spec.name, model_version=spec.version, reason="requested by name"
            )
            return pb.ResolveModelResponse(selection=selection)
        decision, features = await self.gateway.resolver.decide(
            task, request.text, output_tokens, request.language_hint
        )
        spec = self.catalogue.get(decision.model)
        return pb.ResolveModelResponse(
            selection=common_pb2.ModelSelection(
                model=spec.name, model_version=spec.version, automatic=True, reason=decision.reason, rule=decision.rule
            ),
            candidates=_candidates(decision),
            detected_domain=features.domain,
            detected_language=features.language,
        )

    async def ListRoutingDecisions(
        self, request: pb.ListRoutingDecisionsRequest, context: aio.ServicerContext
    ) -> pb.ListRoutingDecisionsResponse:
        if request.max_decisions < 0:
            raise InvalidArgumentError.for_field("max_decisions", "must be >= 0 (0: every decision kept)")
        if request.task != common_pb2.TASK_UNSPECIFIED and request.task not in TASK_FROM_PROTO:
            raise InvalidArgumentError.for_field("task", f"{request.task} is not a task")
        task = TASK_FROM_PROTO.get(request.task)
        principal = current_principal.get()
        log = self.gateway.resolver.decisions
        kept = [
            d for d in log.recent() if principal.allows_model(d.selection.model) and (task is None or d.task == task)
        ]
        if request.max_decisions:
            kept = kept[: request.max_decisions]
        return pb.ListRoutingDecisionsResponse(decisions=[_decision_to_proto(d) for d in kept], capacity=log.capacity)
