"""aisemble.ensemble.v1.EnsembleService: validates the request, the runner calls the members and combines."""

from __future__ import annotations

import math

from grpc import aio

from aisemble.ensemble.v1 import ensemble_service_pb2 as pb
from aisemble.ensemble.v1 import ensemble_service_pb2_grpc
from aisemble.errors import FieldViolation, InvalidArgumentError
from aisemble.resolution import AUTO
from aisemble.rpc.client import Deadline, forwardable_metadata
from services.ensemble.runner import EnsembleRunner, MemberPlan
from services.ensemble.strategies import ALLOWED, DEFAULT

__all__ = ["MAX_MEMBERS", "EnsembleServicer"]

MAX_MEMBERS = 16


class EnsembleServicer(ensemble_service_pb2_grpc.EnsembleServiceServicer):
    """Run: members in parallel, each with its own deadline; partial failure reported per member."""

    def __init__(self, runner: EnsembleRunner) -> None:
        self.runner = runner

    async def Run(self, request: pb.RunRequest, context: aio.ServicerContext) -> pb.RunResponse:
        violations: list[FieldViolation] = []
        kind = request.WhichOneof("input")
        if kind is None:
            violations.append(FieldViolation("input", "is required: completion, classification or detection"))
        elif getattr(request, kind).model:
            violations.append(FieldViolation(f"{kind}.model", "must be empty: each member names its model"))
        if not request.members:
            violations.append(FieldViolation("members", "at least one member is required"))
        if len(request.members) > MAX_MEMBERS:
            violations.append(FieldViolation("members", f"at most {MAX_MEMBERS} members"))
        plans, seen = [], set()
        for index, member in enumerate(request.members):
            where = f"members[{index}]"
            if not member.model or member.model == AUTO:
                violations.append(FieldViolation(f"{where}.model", "must name a registered model ('auto' is refused)"))
            if member.model in seen:
                violations.append(FieldViolation(f"{where}.model", f"'{member.model}' appears twice"))
            seen.add(member.model)
            weight = member.weight if member.HasField("weight") else 1.0
            if not math.isfinite(weight) or weight < 0:
                violations.append(FieldViolation(f"{where}.weight", "must be a finite number >= 0"))
            timeout = member.timeout.ToNanoseconds() / 1e9 if member.HasField("timeout") else None
            if timeout is not None and timeout <= 0:
                violations.append(FieldViolation(f"{where}.timeout", "must be positive"))
            plans.append(MemberPlan(member.model, weight, timeout))
        strategy = request.strategy
        if strategy not in pb.Strategy.values():  # the server's request check refuses it first; do not rely on it
            violations.append(
                FieldViolation("strategy", f"{strategy} is not a value of {pb.Strategy.DESCRIPTOR.full_name}")
            )
        elif kind is not None:
            strategy = strategy or DEFAULT[kind]
            if strategy not in ALLOWED[kind]:
                name = pb.Strategy.Name(strategy)
                violations.append(FieldViolation("strategy", f"{name} does not apply to a {kind}"))
        min_successful = request.min_successful or 1
        if not 1 <= min_successful <= max(1, len(request.members)):
            violations.append(FieldViolation("min_successful", "must be between 1 and the number of members"))
        if violations:
            raise InvalidArgumentError(
                "; ".join(f"{v.field}: {v.description}" for v in violations), field_violations=violations
            )
        assert kind is not None
        return await self.runner.run(
            kind,
            strategy,
            getattr(request, kind),
            plans,
            min_successful,
            Deadline.of(context),
            [(k, v) for k, v in forwardable_metadata(context) if isinstance(v, str)],
        )
