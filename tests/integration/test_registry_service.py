"""The registry as its own service: gateways follow it, forward writes to it, and serve while it is away."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from aisemble.config.schema import CONFIG_DIR
from aisemble.nlp.v1 import nlp_service_pb2 as npb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.client import open_channel
from aisemble.rpc.registry_messages import model_to_proto
from aisemble.rpc.server import ServerConfig
from aisemble.security.keys import KeyFile
from gateway.app import build_server as build_gateway_replica
from services.registry.app import build_server as build_registry
from tests.conftest import status_details
from tests.integration.conftest import build_gateway, free_port, mesh_for, wait_serving, write_registry

NLP = ("minilm-l6", "langid")


@pytest.fixture
async def two_gateways(nlp, registry, store, tmp_path, start_server):
    """Gateways A and B over one registry service (its state in tmp_path), the NLP service behind both."""
    path = write_registry(tmp_path / "registry" / "models.yaml", registry, list(NLP))
    mesh = mesh_for(nlp=[f"127.0.0.1:{nlp[0].port}"])
    a = build_gateway(ServerConfig(name="gateway-a"), mesh, registry_path=path, store_root=store.root)
    channel_a = await start_server(a, admin=True)
    target = f"127.0.0.1:{a.registry_server.port}"
    b = build_gateway_replica(ServerConfig(name="gateway-b"), mesh, registry_target=target)
    channel_b = await start_server(b, admin=True)
    for gateway in (a, b):
        await wait_serving(gateway, NLP)
    return a, b, channel_a, channel_b, path


def _copy_of(registry, name: str, new_name: str) -> rpb.Model:
    model = model_to_proto(registry[name])
    model.name = new_name
    return model


async def test_a_model_registered_through_one_gateway_is_seen_through_the_other_within_a_second(two_gateways, registry):
    a, _b, channel_a, channel_b, path = two_gateways
    seed_before = (CONFIG_DIR / "models.yaml").read_bytes()
    stub_a = registry_service_pb2_grpc.ModelRegistryServiceStub(channel_a)
    stub_b = registry_service_pb2_grpc.ModelRegistryServiceStub(channel_b)
    await stub_a.RegisterModel(rpb.RegisterModelRequest(model=_copy_of(registry, "minilm-l6", "minilm-copy")))
    # A reads its own write at once; B within a second.
    assert (await stub_a.GetModel(rpb.GetModelRequest(name="minilm-copy"))).model.service == "nlp"
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        names = {m.name for m in (await stub_b.ListModels(rpb.ListModelsRequest())).models}
        if "minilm-copy" in names:
            break
        await asyncio.sleep(0.02)
    assert "minilm-copy" in names, "gateway B did not see the registration within a second"
    # The registry service wrote its state file; the shipped seed is untouched.
    assert "minilm-copy" in path.read_text()
    assert (CONFIG_DIR / "models.yaml").read_bytes() == seed_before
    # Removal through B reaches A.
    await stub_b.DeregisterModel(rpb.DeregisterModelRequest(name="minilm-copy"))
    for _ in range(50):
        if a.gateway.registry.find("minilm-copy") is None:
            break
        await asyncio.sleep(0.02)
    assert a.gateway.registry.find("minilm-copy") is None


async def test_gateways_serve_from_their_view_while_the_registry_is_away_and_writes_get_unavailable(
    two_gateways, registry
):
    a, b, channel_a, channel_b, path = two_gateways
    registry_server = a.registry_server
    port = registry_server.port
    await registry_server.stop(grace_s=0)
    for channel in (channel_a, channel_b):
        stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
        assert {m.name for m in (await stub.ListModels(rpb.ListModelsRequest())).models} == set(NLP)
        reply = await nlp_service_pb2_grpc.NlpServiceStub(channel).Embed(
            npb.EmbedRequest(model="minilm-l6", texts=["still served"]), timeout=30
        )
        assert len(reply.embeddings) == 1
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RegisterModel(rpb.RegisterModelRequest(model=_copy_of(registry, "langid", "langid-copy")))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        details = status_details(refused.value)[1]
        assert details["ErrorInfo"].reason == "REGISTRY_UNAVAILABLE" and "RetryInfo" in details
    # The registry comes back on its address: the gateways follow it again, and writes work.
    again = build_registry(ServerConfig(name="registry", address=f"127.0.0.1:{port}"), mesh_for(), path=path)
    await again.start()
    try:
        stub_a = registry_service_pb2_grpc.ModelRegistryServiceStub(channel_a)
        for _ in range(100):
            try:
                await stub_a.RegisterModel(
                    rpb.RegisterModelRequest(model=_copy_of(registry, "langid", "langid-copy")), timeout=2
                )
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.1)
        for _ in range(100):
            if b.gateway.registry.find("langid-copy") is not None:
                break
            await asyncio.sleep(0.05)
        assert b.gateway.registry.find("langid-copy") is not None
    finally:
        await again.stop(grace_s=0)


async def test_a_model_deregistered_while_a_gateway_was_away_from_the_registry_is_dropped_on_reconnect(
    nlp, registry, store, tmp_path, start_server
):
    path = write_registry(tmp_path / "models.yaml", registry, list(NLP))
    port = free_port()
    first = build_registry(ServerConfig(name="registry", address=f"127.0.0.1:{port}"), mesh_for(), path=path)
    await first.start()
    mesh = mesh_for(nlp=[f"127.0.0.1:{nlp[0].port}"])
    gateway = build_gateway_replica(ServerConfig(name="gateway"), mesh, registry_target=f"127.0.0.1:{port}")
    await start_server(gateway, admin=True)
    assert gateway.gateway.registry.find("langid") is not None
    await first.stop(grace_s=0)
    write_registry(path, registry, ["minilm-l6"])  # changed while the gateway could not watch
    second = build_registry(ServerConfig(name="registry", address=f"127.0.0.1:{port}"), mesh_for(), path=path)
    await second.start()
    try:
        for _ in range(200):
            if gateway.gateway.registry.find("langid") is None:
                break
            await asyncio.sleep(0.05)
        assert gateway.gateway.registry.find("langid") is None
        assert gateway.gateway.registry.find("minilm-l6") is not None
    finally:
        await second.stop(grace_s=0)


async def test_the_registry_service_checks_keys_and_roles_like_the_gateway(registry, tmp_path, admin_metadata):
    keys = KeyFile(tmp_path / "keys.json")
    _, admin = keys.create("admin")
    _, user = keys.create("user")
    server = build_registry(
        ServerConfig(name="registry"),
        mesh_for(),
        path=write_registry(tmp_path / "m.yaml", registry, list(NLP)),
        keys=keys,
    )
    port = await server.start()
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
            copy = rpb.RegisterModelRequest(model=_copy_of(registry, "langid", "langid-copy"))
            for key, code in (
                (None, grpc.StatusCode.UNAUTHENTICATED),  # a user key exists: the registry is closed to anonymous
                ("ais_00000000_" + "x" * 43, grpc.StatusCode.UNAUTHENTICATED),
                (user, grpc.StatusCode.PERMISSION_DENIED),
            ):
                metadata = [("authorization", f"Bearer {key}")] if key else []
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.RegisterModel(copy, metadata=metadata)
                assert refused.value.code() == code
            await stub.RegisterModel(copy, metadata=[("authorization", f"Bearer {admin}")])
            listed = await stub.ListModels(rpb.ListModelsRequest(), metadata=[("authorization", f"Bearer {user}")])
            assert "langid-copy" in {m.name for m in listed.models}
            assert not any(m.model_path for m in listed.models)  # configuration is for admins and the mesh
            with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
                await stub.ResolveModel(rpb.ResolveModelRequest(), metadata=[("authorization", f"Bearer {admin}")])
            assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "gateway" in unimplemented.value.details()
    finally:
        await server.stop(grace_s=0)
