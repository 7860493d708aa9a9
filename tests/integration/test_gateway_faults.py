"""Replicas and faults behind the gateway: round_robin over replicas, a dead replica skipped, an upstream
killed mid-stream (the client gets UNAVAILABLE, the gateway keeps serving)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2

from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding
from entrypoints.launcher import wait_healthy
from services.registry.store import write_models_file
from tests.conftest import status_details
from tests.integration.conftest import build_gateway, mesh_for, write_registry

MODEL = "smollm2-135m-onnx"


class ReplicaDouble(llm_service_pb2_grpc.LlmServiceServicer):
    """Answers with its own name: a test double for routing, not a model."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def Complete(self, request, context):
        return pb.CompleteResponse(text=self.name)


async def _replica(name: str) -> AisembleServer:
    binding = ServiceBinding(
        "aisemble.llm.v1.LlmService", ReplicaDouble(name), llm_service_pb2_grpc.add_LlmServiceServicer_to_server
    )
    server = AisembleServer(ServerConfig(name=name), [binding])
    await server.start()
    await server.health.set(MODEL, health_pb2.HealthCheckResponse.SERVING)
    return server


async def _wait_serving(gateway_server, model: str) -> None:
    for _ in range(200):
        if gateway_server.gateway.router.health_of(model) == "SERVING":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{model} never became SERVING at the gateway")


async def test_round_robin_over_replicas_and_a_dead_replica_is_skipped(registry, store, tmp_path, start_server):
    replicas = [await _replica("replica-a"), await _replica("replica-b")]
    try:
        path = write_registry(tmp_path / "models.yaml", registry, [MODEL])
        mesh = mesh_for(llm=[f"127.0.0.1:{r.port}" for r in replicas])
        gateway_server = build_gateway(ServerConfig(name="gateway"), mesh, registry_path=path, store_root=store.root)
        channel = await start_server(gateway_server)
        await _wait_serving(gateway_server, MODEL)
        stub = llm_service_pb2_grpc.LlmServiceStub(channel)
        request = pb.CompleteRequest(model=MODEL, prompt="hi", temperature=0.5)  # not cacheable
        seen = {(await stub.Complete(request)).text for _ in range(12)}
        assert seen == {"replica-a", "replica-b"}

        await replicas[0].stop(grace_s=0)
        answers = [(await stub.Complete(request, timeout=10)).text for _ in range(12)]
        assert set(answers) == {"replica-b"}
    finally:
        for replica in replicas:
            await replica.stop(grace_s=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def llm_process(registry, tmp_path):
    """A real LLM service in its own process (hosting the ONNX SmolLM2 only), killed by the test."""
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    write_models_file(config_dir / "models.yaml", [registry[MODEL]])
    port = _free_port()
    (config_dir / "mesh.yaml").write_text(
        f"gateway: {{address: 127.0.0.1:0}}\nservices:\n  llm: {{addresses: ['127.0.0.1:{port}']}}\n"
        "security: {mtls: false}\n"  # the gateway of this test reaches its services in plaintext
    )
    env = {**os.environ, "AISEMBLE_CONFIG_DIR": str(config_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "serve", "llm", "--metrics-port", "-1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_healthy(f"127.0.0.1:{port}", timeout_s=180), "the LLM service process did not start"
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait()


async def test_upstream_killed_mid_stream(llm, llm_process, registry, store, tmp_path, start_server):
    process, port = llm_process
    in_process = llm[0]
    path = write_registry(tmp_path / "models.yaml", registry, [MODEL])
    mesh = mesh_for(llm=[f"127.0.0.1:{port}", f"127.0.0.1:{in_process.port}"])
    gateway_server = build_gateway(ServerConfig(name="gateway"), mesh, registry_path=path, store_root=store.root)
    channel = await start_server(gateway_server)
    await _wait_serving(gateway_server, MODEL)
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    local_backend = in_process.model_host.models[MODEL].backend

    call = None
    for attempt in range(6):  # round_robin alternates: find a stream that landed on the process
        candidate = stub.StreamComplete(
            pb.StreamCompleteRequest(
                model=MODEL,
                prompt=f"Chapter {attempt + 1}. Once upon a time, in a land far away,",
                max_output_tokens=500,
                temperature=0,  # greedy: deterministic and long; each attempt's prompt differs
            )
        )
        await candidate.read()
        if local_backend.active_sequences == 0:
            call = candidate
            break
        candidate.cancel()
        await asyncio.sleep(0.2)
    assert call is not None, "no stream landed on the separate process"

    os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while True:
            if await call.read() is grpc.aio.EOF:
                break
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    assert "RetryInfo" in status_details(caught.value)[1]

    registry_stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    assert (await registry_stub.ListModels(rpb.ListModelsRequest())).models
    for _ in range(3):  # the dead replica is skipped: the in-process one answers
        reply = await stub.Complete(
            pb.CompleteRequest(model=MODEL, prompt="Hi", max_output_tokens=2, temperature=0.5), timeout=30
        )
        assert reply.usage.output_tokens >= 1
