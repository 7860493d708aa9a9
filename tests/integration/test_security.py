"""Who may call what, through a real gateway and the real LLM server: keys, roles, models per key, quotas,
redacted reads, the metadata that reaches a service, and the limits that keep streams from locking out calls."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisemble.common.v1 import common_pb2
from aisemble.config.schema import ConfigError
from aisemble.config.security import SecurityConfig
from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding
from aisemble.security.keys import KeyFile
from aisemble.security.quotas import UsageFile
from tests.conftest import status_details
from tests.integration.conftest import LLM_MODELS, build_gateway, mesh_for, wait_serving, write_registry

ONNX, TORCH = "smollm2-135m-onnx", "smollm2-135m"


def _bearer(secret: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {secret}")]


@pytest.fixture
async def secured(llm, registry, store, tmp_path, start_server):
    """A gateway over the session's LLM server with its own keys file and a 2 s quota window.

    Yields (server, channel, keys, models.yaml path, usage file)."""
    path = write_registry(tmp_path / "models.yaml", registry, LLM_MODELS)
    mesh = mesh_for(llm=[f"127.0.0.1:{llm[0].port}"])
    mesh = replace(mesh, security=SecurityConfig(mtls=False, quota_window_s=2.0))
    keys, usage = KeyFile(tmp_path / "keys.json"), UsageFile(tmp_path / "usage.json")
    server = build_gateway(
        ServerConfig(name="gateway"), mesh, registry_path=path, store_root=store.root, keys=keys, usage=usage
    )
    channel = await start_server(server)
    await wait_serving(server, LLM_MODELS)
    return server, channel, keys, path, usage


def _complete(model: str = ONNX, tokens: int = 2) -> pb.CompleteRequest:
    return pb.CompleteRequest(model=model, prompt="The capital of France is", max_output_tokens=tokens, temperature=0)


async def test_admin_rpcs_need_an_admin_key_and_change_nothing_without(secured):
    server, channel, keys, path, _ = secured
    registry = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    before = path.read_bytes()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry.DeregisterModel(rpb.DeregisterModelRequest(name=ONNX))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert status_details(caught.value)[1]["ErrorInfo"].reason == "API_KEY_MISSING"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry.DeregisterModel(
            rpb.DeregisterModelRequest(name=ONNX), metadata=_bearer("ais_12345678_" + "x" * 43)
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert status_details(caught.value)[1]["ErrorInfo"].reason == "API_KEY_INVALID"
    _user, user_secret = keys.create("user")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry.RegisterModel(
            rpb.RegisterModelRequest(
                model=rpb.Model(name="mine", task=common_pb2.TASK_TEXT_GENERATION, provider="openai", model_id="x")
            ),
            metadata=_bearer(user_secret),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = status_details(caught.value)[1]["ErrorInfo"]
    assert info.reason == "ROLE_NOT_ALLOWED" and info.metadata["role"] == "user"
    assert path.read_bytes() == before and server.gateway.registry.find(ONNX) is not None
    _admin, admin_secret = keys.create("admin")
    removed = await registry.DeregisterModel(rpb.DeregisterModelRequest(name=TORCH), metadata=_bearer(admin_secret))
    assert removed.model.name == TORCH and path.read_bytes() != before
    assert admin_secret not in path.read_text() and admin_secret not in keys.path.read_text()
    assert keys.path.stat().st_mode & 0o777 == 0o600


async def test_inference_is_open_on_loopback_until_a_user_key_exists(secured):
    _server, channel, keys, _, _ = secured
    llm = llm_service_pb2_grpc.LlmServiceStub(channel)
    assert (await llm.Complete(_complete())).text  # no key, no user keys, loopback only: open
    record, secret = keys.create("user")
    await asyncio.sleep(0.6)  # the gateway re-reads the keys file at most every 0.5 s
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await llm.Complete(_complete())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await llm.Complete(_complete(), metadata=_bearer(secret))).text
    keys.revoke(record.key_id)
    await asyncio.sleep(0.6)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await llm.Complete(_complete(), metadata=_bearer(secret))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert status_details(caught.value)[1]["ErrorInfo"].reason == "API_KEY_REVOKED"


async def test_a_key_limited_to_one_model_cannot_call_or_see_another(secured):
    _server, channel, keys, _, _ = secured
    _record, secret = keys.create("user", models=[ONNX])
    llm = llm_service_pb2_grpc.LlmServiceStub(channel)
    registry = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    assert (await llm.Complete(_complete(ONNX), metadata=_bearer(secret))).text
    for call in (
        llm.Complete(_complete(TORCH), metadata=_bearer(secret)),
        registry.GetModel(rpb.GetModelRequest(name=TORCH), metadata=_bearer(secret)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert status_details(caught.value)[1]["ErrorInfo"].reason == "MODEL_NOT_ALLOWED"
    for _ in range(3):  # `auto` chooses among the key's models only
        chosen = await llm.Complete(_complete("auto"), metadata=_bearer(secret))
        assert chosen.selection.model == ONNX and chosen.selection.automatic
    listed = (await registry.ListModels(rpb.ListModelsRequest(), metadata=_bearer(secret))).models
    assert [m.name for m in listed] == [ONNX]
    assert not listed[0].model_path and not listed[0].params  # configuration is shown to admins only
    _admin, admin_secret = keys.create("admin")
    full = (await registry.GetModel(rpb.GetModelRequest(name=ONNX), metadata=_bearer(admin_secret))).model
    assert full.model_path == "smollm2-135m-instruct-onnx"


async def test_requests_per_minute_quota_with_retry_info_and_served_after_the_window(secured):
    _server, channel, keys, _, _ = secured
    _record, secret = keys.create("user", rpm=2)
    llm = llm_service_pb2_grpc.LlmServiceStub(channel)
    for _ in range(2):
        await llm.Complete(_complete(tokens=1), metadata=_bearer(secret))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await llm.Complete(_complete(tokens=1), metadata=_bearer(secret))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _status, details = status_details(caught.value)
    assert details["ErrorInfo"].reason == "RATE_LIMITED"
    delay = details["RetryInfo"].retry_delay.ToTimedelta().total_seconds()
    assert 0 < delay <= 2.0
    await asyncio.sleep(delay + 0.05)
    assert (await llm.Complete(_complete(tokens=1), metadata=_bearer(secret))).text


async def test_output_tokens_per_minute_count_streams_too(secured):
    server, channel, keys, _, usage = secured
    record, secret = keys.create("user", tpm=4)
    llm = llm_service_pb2_grpc.LlmServiceStub(channel)
    streamed = [
        r
        async for r in llm.StreamComplete(
            pb.StreamCompleteRequest(model=ONNX, prompt="Once upon a time", max_output_tokens=4, temperature=0),
            metadata=_bearer(secret),
        )
    ]
    assert streamed[-1].usage.output_tokens == 4
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await llm.Complete(_complete(tokens=1), metadata=_bearer(secret))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _status, details = status_details(caught.value)
    assert (
        details["ErrorInfo"].reason == "TOKEN_QUOTA_EXCEEDED" and details["RetryInfo"].retry_delay.ToNanoseconds() > 0
    )
    await asyncio.sleep(details["RetryInfo"].retry_delay.ToTimedelta().total_seconds() + 0.05)
    assert (await llm.Complete(_complete(tokens=1), metadata=_bearer(secret))).text
    # the figures: Prometheus on the gateway, and the usage file `aisemble keys list` reads
    metrics = server.metrics.registry
    labels = {"key_id": record.key_id, "role": "user"}
    assert metrics.get_sample_value("aisemble_key_output_tokens_total", labels) == 5
    assert metrics.get_sample_value("aisemble_key_requests_total", labels) == 2
    assert metrics.get_sample_value("aisemble_key_rejected_total", {**labels, "reason": "TOKEN_QUOTA_EXCEEDED"}) == 1
    for _ in range(40):
        if usage.read().get(record.key_id) and usage.read()[record.key_id].output_tokens == 5:
            break
        await asyncio.sleep(0.1)
    totals = usage.read()[record.key_id]
    assert (totals.requests, totals.output_tokens, totals.rejected) == (2, 5, 1) and totals.cost > 0


async def test_concurrent_calls_per_key(secured):
    _server, channel, keys, _, _ = secured
    _record, secret = keys.create("user", max_concurrent=1)
    llm = llm_service_pb2_grpc.LlmServiceStub(channel)
    stream = llm.StreamComplete(
        pb.StreamCompleteRequest(model=ONNX, prompt="Once upon a time", max_output_tokens=40, temperature=0),
        metadata=_bearer(secret),
    )
    await stream.read()  # the first reply: the stream is in flight
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await llm.Complete(_complete(tokens=1), metadata=_bearer(secret))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_details(caught.value)[1]["ErrorInfo"].reason == "CONCURRENCY_LIMITED"
    stream.cancel()
    await asyncio.sleep(0.2)
    assert (await llm.Complete(_complete(tokens=1), metadata=_bearer(secret))).text


async def test_300_idle_watch_streams_leave_unary_calls_and_health_answering(secured):
    server, channel, _keys, _, _ = secured
    registry = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    watches = [registry.WatchModels(rpb.WatchModelsRequest()) for _ in range(300)]
    for _ in range(200):  # the calls start at once; the 44 beyond the stream limit end at once, refused
        if server.limits.streams_in_flight == 256 and sum(w.done() for w in watches) == 300 - 256:
            break
        await asyncio.sleep(0.05)
    refused = [w for w in watches if w.done()]
    assert server.limits.streams_in_flight == 256 and len(refused) == 300 - 256
    assert {await w.code() for w in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert (await registry.ListModels(rpb.ListModelsRequest(), timeout=5)).models
    assert (await llm_service_pb2_grpc.LlmServiceStub(channel).Complete(_complete(tokens=1), timeout=30)).text
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    for watch in watches:
        watch.cancel()


class MetadataEcho(llm_service_pb2_grpc.LlmServiceServicer):
    """Answers with the metadata keys it received: a test double for what the gateway forwards, not a model."""

    async def Complete(self, request, context):
        pairs = dict(context.invocation_metadata())
        keys = ",".join(sorted(pairs))
        return pb.CompleteResponse(text=f"{keys};{pairs.get('x-aisemble-on-behalf-of', '')}")


async def test_only_allowlisted_metadata_reaches_a_service_and_never_the_key(registry, store, tmp_path, start_server):
    binding = ServiceBinding(
        "aisemble.llm.v1.LlmService", MetadataEcho(), llm_service_pb2_grpc.add_LlmServiceServicer_to_server
    )
    echo = AisembleServer(ServerConfig(name="echo"), [binding])
    await start_server(echo)
    await echo.health.set(ONNX, health_pb2.HealthCheckResponse.SERVING)
    path = write_registry(tmp_path / "models.yaml", registry, [ONNX])
    keys = KeyFile(tmp_path / "keys.json")
    gateway = build_gateway(
        ServerConfig(name="gateway"),
        mesh_for(llm=[f"127.0.0.1:{echo.port}"]),
        registry_path=path,
        store_root=store.root,
        keys=keys,
        usage=UsageFile(tmp_path / "usage.json"),
    )
    channel = await start_server(gateway)
    record, secret = keys.create("user")
    metadata = [
        *_bearer(secret),
        ("x-request-id", "r-1"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("cookie", "session=1"),
        ("x-aisemble-on-behalf-of", "someone-else"),
    ]
    reply = await llm_service_pb2_grpc.LlmServiceStub(channel).Complete(_complete(), metadata=metadata, timeout=10)
    names, _, on_behalf = reply.text.partition(";")
    received = set(names.split(","))
    assert {"x-request-id", "traceparent", "x-aisemble-on-behalf-of"} <= received
    assert not {"authorization", "cookie"} & received
    assert on_behalf == record.key_id  # whose call it is, as the gateway says, not as the caller claimed


async def test_a_mesh_beyond_loopback_without_keys_refuses_to_start(tmp_path):
    mesh = mesh_for()
    mesh = replace(mesh, gateway=replace(mesh.gateway, addresses=("0.0.0.0:0",)))
    with pytest.raises(ConfigError, match="holds no API key"):
        build_gateway(ServerConfig(name="gateway", address="0.0.0.0:0"), mesh, keys=KeyFile(tmp_path / "keys.json"))
    keys = KeyFile(tmp_path / "keys.json")
    keys.create("admin")
    server = build_gateway(ServerConfig(name="gateway"), mesh, keys=keys, usage=UsageFile(tmp_path / "u.json"))
    assert not server.gateway.authenticator.open_to_anonymous()  # beyond loopback, inference needs a key too
