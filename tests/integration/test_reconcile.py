"""Services converge on the registry: a failed load is retried until it works, and a model removed while the
follower was away (the registry service down) is unloaded when it is back. Real NLP server, real fastText model."""

from __future__ import annotations

import asyncio
import os
import shutil

from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisemble.hosting import host as host_module
from aisemble.rpc.server import ServerConfig
from aisemble.store.model_store import ModelStore
from services.nlp.app import build_server as build_nlp
from services.registry.app import build_server as build_registry
from tests.integration.conftest import free_port, mesh_for, write_registry

MODEL = "langid"


async def _until(predicate, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _link_tree(source, target) -> None:
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


async def test_a_failed_load_is_retried_until_its_files_appear(registry, store, tmp_path, start_server, monkeypatch):
    monkeypatch.setattr(host_module, "RETRY_FIRST_S", 0.3)
    empty = ModelStore(tmp_path / "store")
    (tmp_path / "store").mkdir()
    server = build_nlp(ServerConfig(name="nlp"), None, {MODEL: registry[MODEL]}, store=empty)
    channel = await start_server(server)
    hosted = server.model_host.models[MODEL]
    assert hosted.state.value == "failed" and "next try in" in hosted.error and hosted.retry_at is not None
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=MODEL))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    _link_tree(store.path(MODEL), empty.root / MODEL)  # the operator runs `aisemble models prepare langid`
    await _until(lambda: server.model_host.models[MODEL].state.value == "ready", seconds=20)
    assert server.model_host.models[MODEL].failures == 0
    reply = await health.Check(health_pb2.HealthCheckRequest(service=MODEL))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_model_removed_while_the_follower_was_away_is_unloaded(registry, store, tmp_path, start_server):
    port = free_port()
    nlp = build_nlp(ServerConfig(name="nlp"), None, {}, store=store, registry_target=f"127.0.0.1:{port}")
    await start_server(nlp)

    def registry_service(names):
        return build_registry(
            ServerConfig(name="registry", address=f"127.0.0.1:{port}"),
            mesh_for(),
            path=write_registry(tmp_path / f"models-{len(names)}.yaml", registry, names),
            store_root=store.root,
        )

    first = registry_service([MODEL, "minilm-l6"])
    await first.start()
    await _until(lambda: all(nlp.model_host.models.get(m) is not None for m in (MODEL, "minilm-l6")))
    await _until(lambda: nlp.model_host.models[MODEL].state.value == "ready")
    await first.stop(grace_s=0.2)
    # While the registry service is away, its state loses langid (an operator edited the file, say).
    second = registry_service(["minilm-l6"])
    await second.start()
    try:
        await _until(lambda: MODEL not in nlp.model_host.models, seconds=30)
        assert "minilm-l6" in nlp.model_host.models  # what is still registered stays
    finally:
        await second.stop(grace_s=0.2)
