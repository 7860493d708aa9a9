"""A huge `auto` prompt through the real gateway and LLM server: refused clearly, health checks never wait."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisemble.common.v1 import common_pb2
from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from tests.conftest import status_details
from tests.integration.conftest import LLM_MODELS, build_gateway, mesh_for, wait_serving, write_registry

# 40,000 digits: Python's backtracking re took ~18 s on '\d+\s*[-+*/^]\s*\d+' over them, on the event loop.
DIGITS = "7" * 40_000
PERIOD_S = 0.1  # a health check every 100 ms, each answered within 100 ms
CLEAR_REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@pytest.fixture
async def gateway(llm, registry, store, tmp_path, start_server):
    """A gateway whose llm upstream is the session's LLM server (nlp, for the language detector, is down)."""
    server, _stub, _ = llm
    path = write_registry(tmp_path / "models.yaml", registry, LLM_MODELS)
    mesh = mesh_for(llm=[f"127.0.0.1:{server.port}"], nlp=["127.0.0.1:9"])
    gateway_server = build_gateway(ServerConfig(name="gateway"), mesh, registry_path=path, store_root=store.root)
    channel = await start_server(gateway_server)
    await wait_serving(gateway_server, LLM_MODELS)
    return gateway_server, channel


async def _probe(channel: grpc.aio.Channel, stop: asyncio.Event, checks: list[tuple[float, float, int]]) -> None:
    """grpc.health.v1 Check every PERIOD_S until stop: (how late it was sent, how long it took, status) of each.

    Client and gateway share this event loop, so a stalled gateway shows as a late send as well as a slow answer.
    """
    health = health_pb2_grpc.HealthStub(channel)
    loop = asyncio.get_running_loop()
    due = loop.time()
    while not stop.is_set():
        sent = loop.time()
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        checks.append((sent - due, loop.time() - sent, reply.status))
        due = max(due + PERIOD_S, loop.time())  # after a stall, the next one 100 ms on: no catching up
        await asyncio.sleep(max(0.0, due - loop.time()))


async def _outcome(call) -> tuple[grpc.StatusCode, object]:
    try:
        return grpc.StatusCode.OK, await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error


async def test_a_40k_digit_auto_prompt_is_refused_clearly_while_health_checks_answer_in_time(gateway):
    _server, channel = gateway
    llm = llm_service_pb2_grpc.LlmServiceStub(channel)
    resolver = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    stop, checks = asyncio.Event(), []
    probe = asyncio.create_task(_probe(channel, stop, checks))
    try:
        await asyncio.sleep(3 * PERIOD_S)  # a baseline
        complete = llm.Complete(pb.CompleteRequest(model="auto", prompt=DIGITS, max_output_tokens=1), timeout=60)
        resolve = resolver.ResolveModel(
            rpb.ResolveModelRequest(
                task=common_pb2.TASK_TEXT_GENERATION, model="auto", text=DIGITS, max_output_tokens=1
            ),
            timeout=60,
        )
        (complete_code, completed), (resolve_code, resolved) = await asyncio.gather(
            _outcome(complete), _outcome(resolve)
        )
        await asyncio.sleep(3 * PERIOD_S)
    finally:
        stop.set()
        await probe

    assert len(checks) >= 6
    assert all(status == health_pb2.HealthCheckResponse.SERVING for *_, status in checks)
    slowest, latest = max(latency for _, latency, _ in checks), max(lateness for lateness, _, _ in checks)
    assert slowest < PERIOD_S, f"a health check took {slowest:.3f} s (of {len(checks)})"
    assert latest < PERIOD_S, f"the gateway's event loop stalled: a check went out {latest:.3f} s late"

    # The prompt (~10,000 tokens) is longer than either model's context window (8192): refused, saying so.
    assert complete_code == grpc.StatusCode.OK or complete_code in CLEAR_REFUSALS, completed
    if complete_code != grpc.StatusCode.OK:
        assert status_details(completed)[1]["ErrorInfo"].reason
    # ResolveModel answers: a decision, or the explanation of why no model can take the whole prompt.
    if resolve_code == grpc.StatusCode.OK:
        assert resolved.selection.automatic
    else:
        assert resolve_code == grpc.StatusCode.FAILED_PRECONDITION, resolved
        assert status_details(resolved)[1]["ErrorInfo"].reason == "NO_ELIGIBLE_MODEL"
        for model in LLM_MODELS:
            assert f"{model}: context window 8192 < ~10009 tokens needed" in resolved.details()


async def test_auto_reads_only_the_first_4096_characters_of_a_long_text(gateway):
    _server, channel = gateway
    resolver = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)

    async def domain_of(text: str) -> str:
        request = rpb.ResolveModelRequest(task=common_pb2.TASK_TEXT_GENERATION, model="auto", text=text)
        reply = await resolver.ResolveModel(request, timeout=10)
        assert reply.selection.automatic and reply.selection.model in LLM_MODELS
        return reply.detected_domain

    assert await domain_of("The patient has a fever. " + "7" * 20_000) == "medical"
    assert await domain_of("7" * 20_000 + " The patient has a fever.") == "general"  # past the cap: not read
