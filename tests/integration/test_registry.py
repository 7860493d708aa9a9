"""The registry through the gateway: filters, validated writes, concurrency, watchers, and crash safety."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import grpc
import pytest
import yaml

from aisemble.common.v1 import common_pb2
from aisemble.config.models import load_models
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from tests.conftest import status_details
from tests.integration.conftest import build_gateway, mesh_for, write_registry


@pytest.fixture
async def registry_stub(registry, store, tmp_path, start_server):
    path = write_registry(tmp_path / "models.yaml", registry, list(registry))
    server = build_gateway(ServerConfig(name="gateway"), mesh_for(), registry_path=path, store_root=store.root)
    channel = await start_server(server, admin=True)
    return registry_service_pb2_grpc.ModelRegistryServiceStub(channel), path


def _remote(name: str, **fields) -> rpb.Model:
    return rpb.Model(
        name=name,
        task=common_pb2.TASK_TEXT_GENERATION,
        provider="openai",
        model_id="gpt-x",
        endpoint="http://127.0.0.1:1/v1",
        **fields,
    )


async def test_list_filters_and_get(registry_stub):
    stub, _ = registry_stub
    everything = (await stub.ListModels(rpb.ListModelsRequest())).models
    assert {"smollm2-135m", "minilm-l6", "yolov8-fall"} <= {m.name for m in everything}
    llms = (await stub.ListModels(rpb.ListModelsRequest(task=common_pb2.TASK_TEXT_GENERATION))).models
    assert llms and all(m.task == common_pb2.TASK_TEXT_GENERATION for m in llms)
    onnx = (await stub.ListModels(rpb.ListModelsRequest(provider="onnxruntime"))).models
    assert onnx and all(m.provider == "onnxruntime" for m in onnx)
    english = (await stub.ListModels(rpb.ListModelsRequest(language="en"))).models
    assert "smollm2-135m" in {m.name for m in english}
    page = await stub.ListModels(rpb.ListModelsRequest(page_size=2))
    assert len(page.models) == 2 and page.next_page_token
    got = (await stub.GetModel(rpb.GetModelRequest(name="smollm2-135m"))).model
    assert got.max_tokens == 8192 and got.cost_per_token > 0 and got.service == "llm"


async def test_register_persists_and_deregister_removes(registry_stub):
    stub, path = registry_stub
    header = path.read_text().splitlines()[0]
    assert header.startswith("#")
    await stub.RegisterModel(rpb.RegisterModelRequest(model=_remote("my-gpt", cost_per_token=0.00002, tags=["remote"])))
    assert load_models(path)["my-gpt"].cost_per_token == 0.00002
    assert path.read_text().splitlines()[0] == header, "the file's comment block was kept"
    await stub.DeregisterModel(rpb.DeregisterModelRequest(name="my-gpt"))
    assert "my-gpt" not in load_models(path)


@pytest.mark.parametrize(
    ("model", "code", "words"),
    [
        (_remote("smollm2-135m"), grpc.StatusCode.ALREADY_EXISTS, "already registered"),
        (
            rpb.Model(name="x1", task=common_pb2.TASK_TEXT_GENERATION, provider="llama-cpp"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown provider",
        ),
        (
            rpb.Model(name="x2", task=common_pb2.TASK_EMBEDDING, provider="onnxruntime", model_path="../../etc"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "without '..'",
        ),
        (
            rpb.Model(name="x3", task=common_pb2.TASK_EMBEDDING, provider="onnxruntime", model_path="/etc/passwd"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "relative",
        ),
        (
            rpb.Model(name="x4", task=common_pb2.TASK_EMBEDDING, provider="onnxruntime", model_path="not-built"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "not in the model store",
        ),
        (
            rpb.Model(name="Bad Name", task=common_pb2.TASK_EMBEDDING, provider="onnxruntime"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "must match",
        ),
        (
            rpb.Model(name="auto", task=common_pb2.TASK_EMBEDDING, provider="onnxruntime"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "reserved",
        ),
        (rpb.Model(name="x5", provider="onnxruntime"), grpc.StatusCode.INVALID_ARGUMENT, "field 'task': is required"),
    ],
)
async def test_bad_registrations_are_refused(registry_stub, model, code, words):
    stub, path = registry_stub
    before = path.read_bytes()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RegisterModel(rpb.RegisterModelRequest(model=model))
    assert caught.value.code() == code and words in caught.value.details(), caught.value.details()
    assert status_details(caught.value)[1]["ErrorInfo"].domain == "aisemble"
    assert path.read_bytes() == before


async def test_symlink_out_of_the_store_is_invalid_argument(registry_stub, store, tmp_path):
    stub, _ = registry_stub
    outside = tmp_path / "outside"
    outside.mkdir()
    link = store.root / "escape-link-test"
    link.symlink_to(outside)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RegisterModel(
                rpb.RegisterModelRequest(
                    model=rpb.Model(
                        name="escaper",
                        task=common_pb2.TASK_EMBEDDING,
                        provider="onnxruntime",
                        model_path="escape-link-test",
                    )
                )
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        _, details = status_details(caught.value)
        assert details["ErrorInfo"].reason == "PATH_OUTSIDE_STORE"
        assert [v.field for v in details["BadRequest"].field_violations] == ["model.model_path"]
    finally:
        link.unlink()


async def test_concurrent_registrations_lose_nothing(registry_stub):
    stub, path = registry_stub
    names = [f"remote-{i}" for i in range(20)]
    await asyncio.gather(*(stub.RegisterModel(rpb.RegisterModelRequest(model=_remote(n))) for n in names))
    assert set(names) <= set(load_models(path))


async def test_watch_sees_changes(registry_stub):
    stub, _ = registry_stub
    watch = stub.WatchModels(rpb.WatchModelsRequest(send_current_models=True))
    current = [await watch.read() for _ in range(len(load_models(registry_stub[1])))]
    assert all(c.change_type == rpb.CHANGE_TYPE_ADDED for c in current)
    await stub.RegisterModel(rpb.RegisterModelRequest(model=_remote("watched")))
    added = await asyncio.wait_for(watch.read(), 5)
    assert (added.change_type, added.model.name) == (rpb.CHANGE_TYPE_ADDED, "watched")
    await stub.RegisterModel(
        rpb.RegisterModelRequest(model=_remote("watched", description="v2"), replace_existing=True)
    )
    updated = await asyncio.wait_for(watch.read(), 5)
    assert updated.change_type == rpb.CHANGE_TYPE_UPDATED and updated.model.description == "v2"
    await stub.DeregisterModel(rpb.DeregisterModelRequest(name="watched"))
    removed = await asyncio.wait_for(watch.read(), 5)
    assert (removed.change_type, removed.model.name) == (rpb.CHANGE_TYPE_REMOVED, "watched")
    watch.cancel()


WRITER = textwrap.dedent(
    """
    import sys
    from aisemble.config.models import model_from_mapping
    from services.registry.store import write_models_file
    path = sys.argv[1]
    i = 0
    while True:
        i += 1
        specs = [model_from_mapping(f"m{j}", {"task": "embedding", "provider": "onnxruntime",
                 "description": "x" * 2000, "version": str(i)}) for j in range(40)]
        write_models_file(__import__("pathlib").Path(path), specs)
        print(i, flush=True)
    """
)


def test_a_kill_9_at_any_moment_leaves_a_whole_file(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("models: {}\n")
    rng = random.Random(7)
    for _round in range(12):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        writer.stdout.readline()  # it is writing
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        document = yaml.safe_load(path.read_text())
        models = load_models(path)
        assert len(models) == 40 and len({m.version for m in models.values()}) == 1, "a half-written file"
        assert document["models"]["m39"]["description"] == "x" * 2000
    leftovers = [p for p in tmp_path.iterdir() if p.name != "models.yaml"]
    assert all(p.name.startswith(".models.yaml.") for p in leftovers)  # temp files of killed writes, never the registry
