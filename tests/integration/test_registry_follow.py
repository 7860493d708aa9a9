"""A model registered at run time is loaded by its service and served through the gateway at once."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from aisemble.common.v1 import common_pb2
from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from services.llm.app import build_server as build_llm
from tests.integration.conftest import build_gateway, free_port, mesh_for, write_registry


async def _until(predicate, seconds: float = 60.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def test_registered_model_is_loaded_and_served(registry, store, tmp_path, start_server):
    registry_port = free_port()  # the LLM service follows the registry service there, as in the mesh
    llm_server = build_llm(
        ServerConfig(name="llm"), None, {}, store=store, registry_target=f"127.0.0.1:{registry_port}"
    )
    await start_server(llm_server)
    path = write_registry(tmp_path / "models.yaml", registry, ["minilm-l6"])
    gateway_server = build_gateway(
        ServerConfig(name="gateway"),
        mesh_for(llm=[f"127.0.0.1:{llm_server.port}"]),
        registry_path=path,
        store_root=store.root,
        registry_port=registry_port,
    )
    channel = await start_server(gateway_server, admin=True)
    registry_stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    llm_stub = llm_service_pb2_grpc.LlmServiceStub(channel)

    model = rpb.Model(
        name="smol-late",
        task=common_pb2.TASK_TEXT_GENERATION,
        provider="onnxruntime",
        model_path="smollm2-135m-instruct-onnx",
        max_tokens=8192,
        max_output_tokens=64,
    )
    await registry_stub.RegisterModel(rpb.RegisterModelRequest(model=model))

    async def serving() -> bool:
        return gateway_server.gateway.router.health_of("smol-late") == "SERVING"

    await _until(serving)
    reply = await llm_stub.Complete(
        pb.CompleteRequest(model="smol-late", prompt="Hello", max_output_tokens=3, temperature=0)
    )
    assert reply.usage.output_tokens == 3 and reply.selection.model == "smol-late"

    await registry_stub.DeregisterModel(rpb.DeregisterModelRequest(name="smol-late"))

    async def unloaded() -> bool:
        return "smol-late" not in llm_server.model_host.models

    await _until(unloaded, 10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await llm_stub.Complete(pb.CompleteRequest(model="smol-late", prompt="Hello", max_output_tokens=3))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
