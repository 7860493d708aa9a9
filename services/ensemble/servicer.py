"""aisemble.ensemble.v1.EnsembleService: validates the request, the runner calls the members and combines."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

from grpc import aio

from aisemble.ensemble.v1 import ensemble_service_pb2 as pb
from aisemble.ensemble.v1 import ensemble_service_pb2_grpc
from aisemble.errors import FieldViolation, InvalidArgumentError
from aisemble.resolution import AUTO
from aisemble.rpc.client import Deadline, forwardable_metadata
from services.ensemble.runner import EnsemblePlan, EnsembleRunner, MemberPlan
from services.ensemble.strategies import ALLOWED, DEFAULT

__all__ = ["MAX_MEMBERS", "EnsembleServicer"]

MAX_MEMBERS = 16


class EnsembleServicer(ensemble_service_pb2_grpc.EnsembleServiceServicer):
    """Run / StreamRun: members in parallel, each with its own deadline; partial failure reported per member."""

    def __init__(self, runner: EnsembleRunner) -> None:
        self.runner = runner

    async def Run(self, request: pb.RunRequest, context: aio.ServicerContext) -> pb.RunResponse:
        plan = self._plan(request)
        return await self.runner.run(plan, Deadline.of(context), _metadata(context))

    async def StreamRun(
        self, request: pb.StreamRunRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.StreamRunResponse]:
        plan = self._plan(request.run, prefix="run.")
        async for message in self.runner.stream(plan, Deadline.of(context), _metadata(context)):
            yield message

    @staticmethod
    def _plan(request: pb.RunRequest, prefix: str = "") -> EnsemblePlan:
        """The validated run (INVALID_ARGUMENT naming the fields, under `prefix` in StreamRun's request)."""
        violations: list[FieldViolation] = []

        def refuse(field: str, description: str) -> None:
            violations.append(FieldViolation(prefix + field, description))

        kind = request.WhichOneof("input")
        if kind is None:
            refuse("input", "is required: completion, classification or detection")
        elif getattr(request, kind).model:
            refuse(f"{kind}.model", "must be empty: each member names its model")
        if not request.members:
            refuse("members", "at least one member is required")
        if len(request.members) > MAX_MEMBERS:
            refuse("members", f"at most {MAX_MEMBERS} members")
        plans, seen = [], set()
        for index, member in enumerate(request.members):
            where = f"members[{index}]"
            if not member.model or member.model == AUTO:
                refuse(f"{where}.model", "must name a registered model ('auto' is refused)")
            if member.model in seen:
                refuse(f"{where}.model", f"'{member.model}' appears twice")
            seen.add(member.model)
            weight = member.weight if member.HasField("weight") else 1.0
            if not math.isfinite(weight) or weight < 0:
                refuse(f"{where}.weight", "must be a finite number >= 0")
            timeout = member.timeout.ToNanoseconds() / 1e9 if member.HasField("timeout") else None
            if timeout is not None and timeout <= 0:
                refuse(f"{where}.timeout", "must be positive")
            plans.append(MemberPlan(member.model, weight, timeout))
        strategy = request.strategy
        if strategy not in pb.Strategy.values():  # the server's request check refuses it first; do not rely on it
            refuse("strategy", f"{strategy} is not a value of {pb.Strategy.DESCRIPTOR.full_name}")
        elif kind is not None:
            strategy = strategy or DEFAULT[kind]
            if strategy not in ALLOWED[kind]:
                name = pb.Strategy.Name(strategy)
                refuse("strategy", f"{name} does not apply to a {kind}")
        min_successful = request.min_successful or 1
        if not 1 <= min_successful <= max(1, len(request.members)):
            refuse("min_successful", "must be between 1 and the number of members")
        if violations:
            raise InvalidArgumentError(
                "; ".join(f"{v.field}: {v.description}" for v in violations), field_violations=violations
            )
        assert kind is not None
        return EnsemblePlan(kind, strategy, getattr(request, kind), plans, min_successful)


def _metadata(context: aio.ServicerContext) -> list[tuple[str, str]]:
    return [(k, v) for k, v in forwardable_metadata(context) if isinstance(v, str)]
