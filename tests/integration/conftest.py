"""Integration fixtures: real servers on port 0 hosting real models, shared across the session."""

from __future__ import annotations

import grpc
import pytest
from aisemble.llm.v1 import llm_service_pb2_grpc

from aisemble.server import ServerConfig
from services.llm.app import build_server as build_llm_server

LLM_MODELS = ("smollm2-135m", "smollm2-135m-onnx")


@pytest.fixture(scope="session")
async def llm(registry, store):
    """One LLM server for the session hosting SmolLM2 on transformers and on ONNX Runtime.

    Yields (server, LlmServiceStub, channel).
    """
    models = {name: registry[name] for name in LLM_MODELS}
    server = build_llm_server(ServerConfig(name="llm"), None, models, store=store)
    port = await server.start()
    for name in LLM_MODELS:
        assert server.model_host.models[name].state.value == "ready", server.model_host.models[name].error
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield server, llm_service_pb2_grpc.LlmServiceStub(channel), channel
    await channel.close()
    await server.stop(grace_s=1)


def write_registry(path, registry, names):
    """A models.yaml holding only the named entries of the shipped registry."""
    from gateway.registry import write_models_file

    write_models_file(path, [registry[name] for name in names])
    return path


def mesh_for(**services):
    """A MeshConfig whose services are at the given addresses (lists of host:port)."""
    from aisemble.config import MeshConfig, ServiceEndpoint

    return MeshConfig(
        gateway=ServiceEndpoint("gateway", ("127.0.0.1:0",)),
        services={name: ServiceEndpoint(name, tuple(addresses)) for name, addresses in services.items()},
    )
