"""Runs an ensemble: every member through the gateway in parallel, each with its own deadline, then combines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from opentelemetry.trace import SpanKind, Status, StatusCode

from aisemble.common.v1 import common_pb2
from aisemble.ensemble.v1 import ensemble_service_pb2 as pb
from aisemble.errors import Code, UnavailableError
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.rpc.client import PLAINTEXT, CallFailure, Deadline, Peer, call_failure, open_channel
from aisemble.rpc.telemetry import span
from aisemble.vision.v1 import vision_service_pb2_grpc
from services.ensemble.strategies import Success, combine, confidence

__all__ = ["EnsemblePlan", "EnsembleRunner", "MemberPlan"]


@dataclass(frozen=True)
class MemberPlan:
    """One member as validated: model, weight and how long it may take."""

    model: str
    weight: float
    timeout_s: float | None


@dataclass(frozen=True)
class EnsemblePlan:
    """A validated ensemble: the input's kind ("completion", "classification", "detection"), the strategy, the input
    request (sent to every member under its own model name), the members, and how many must succeed."""

    kind: str
    strategy: int
    request: Any
    members: Sequence[MemberPlan]
    min_successful: int


def _failure(model: str, exc: Exception) -> common_pb2.PartFailure:
    failure = call_failure(exc, "the member did not answer within its timeout") or CallFailure(
        Code.INTERNAL, "INTERNAL", type(exc).__name__
    )
    return common_pb2.PartFailure(part=model, code=failure.code, reason=failure.reason, message=failure.message)


def _entry(kind: str, member: MemberPlan, result: Any, seconds: float, error: Exception | None) -> pb.MemberResult:
    """What one member returned (or why it failed), with its latency and confidence."""
    entry = pb.MemberResult(model=member.model, weight=member.weight)
    entry.latency.CopyFrom(duration_pb2.Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9)))
    if error is not None:
        entry.failure.CopyFrom(_failure(member.model, error))
    else:
        entry.confidence = confidence(kind, result)
        getattr(entry, kind).CopyFrom(result)
    return entry


def _combined(plan: EnsemblePlan, entries: Sequence[pb.MemberResult]) -> pb.RunResponse:
    """The members' outcomes (in the request's order) and their combined result; UNAVAILABLE
    (ENSEMBLE_TOO_FEW_MEMBERS) when fewer than min_successful succeeded."""
    kind, strategy, min_successful = plan.kind, plan.strategy, plan.min_successful
    response = pb.RunResponse(strategy=strategy, member_results=entries)  # type: ignore[arg-type]
    successes = [
        Success(e.model, e.weight, getattr(e, kind), e.confidence) for e in entries if not e.HasField("failure")
    ]
    if len(successes) < min_successful:
        failures = "; ".join(
            f"{e.model}: {Code.of(e.failure.code).name} {e.failure.message}" for e in entries if e.HasField("failure")
        )
        raise UnavailableError(
            f"{len(successes)} of {len(entries)} members succeeded, min_successful is {min_successful}: {failures}",
            reason="ENSEMBLE_TOO_FEW_MEMBERS",
            metadata={"succeeded": str(len(successes)), "min_successful": str(min_successful)},
            retry_after_s=1.0,
        )
    getattr(response, kind).CopyFrom(combine(kind, strategy, successes))
    return response


class EnsembleRunner:
    """Calls members through the gateway (so they are routed, cached and measured like any call)."""

    def __init__(self, gateway_target: str, max_message_bytes: int = 16 * 1024 * 1024, peer: Peer = PLAINTEXT) -> None:
        self.channel = open_channel(gateway_target, max_message_bytes, peer=peer)
        self._calls = {
            "completion": llm_service_pb2_grpc.LlmServiceStub(self.channel).Complete,
            "classification": nlp_service_pb2_grpc.NlpServiceStub(self.channel).Classify,
            "detection": vision_service_pb2_grpc.VisionServiceStub(self.channel).Detect,
        }

    async def _member(
        self, kind: str, request: Any, member: MemberPlan, deadline: Deadline, metadata: Sequence[tuple[str, str]]
    ) -> tuple[MemberPlan, Any, float, Exception | None]:
        own = type(request)()
        own.CopyFrom(request)
        own.model = member.model
        started = time.perf_counter()
        with span("ensemble.member", {"aisemble.model": member.model}, kind=SpanKind.CLIENT) as calling:
            try:
                result = await self._calls[kind](own, timeout=deadline.timeout(member.timeout_s), metadata=metadata)
                return member, result, time.perf_counter() - started, None
            except (TimeoutError, grpc.aio.AioRpcError) as exc:
                code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "DEADLINE_EXCEEDED"
                calling.set_status(Status(StatusCode.ERROR, code))
                return member, None, time.perf_counter() - started, exc

    async def run(
        self, plan: EnsemblePlan, deadline: Deadline, metadata: Sequence[tuple[str, str]] = ()
    ) -> pb.RunResponse:
        """Every member's outcome and, when enough succeeded, the combined result."""
        outcomes = await asyncio.gather(*self._calls_of(plan, deadline, metadata))
        return _combined(plan, [_entry(plan.kind, *outcome) for outcome in outcomes])

    async def stream(
        self, plan: EnsemblePlan, deadline: Deadline, metadata: Sequence[tuple[str, str]] = ()
    ) -> AsyncIterator[pb.StreamRunResponse]:
        """Each member's outcome as it finishes, then the combined result (as run's); the members still running
        are cancelled when the caller goes away."""
        calls = [asyncio.ensure_future(call) for call in self._calls_of(plan, deadline, metadata)]
        entries: dict[str, pb.MemberResult] = {}
        try:
            for finished in asyncio.as_completed(calls):
                entry = _entry(plan.kind, *await finished)
                entries[entry.model] = entry
                yield pb.StreamRunResponse(member_result=entry)
        finally:
            for call in calls:
                call.cancel()
        yield pb.StreamRunResponse(combined=_combined(plan, [entries[m.model] for m in plan.members]))

    def _calls_of(
        self, plan: EnsemblePlan, deadline: Deadline, metadata: Sequence[tuple[str, str]]
    ) -> list[Coroutine[Any, Any, tuple[MemberPlan, Any, float, Exception | None]]]:
        return [self._member(plan.kind, plan.request, member, deadline, metadata) for member in plan.members]

    async def close(self) -> None:
        """Close the gateway channel."""
        await self.channel.close()
