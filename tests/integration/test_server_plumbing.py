"""The shared server through a real grpc.aio server: health, reflection, error mapping, limits, metrics, shutdown.

The servicers here are test doubles that raise on purpose: they test the plumbing, not a model.
"""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aisemble.config.models import model_from_mapping
from aisemble.ensemble.v1 import ensemble_service_pb2, ensemble_service_pb2_grpc
from aisemble.errors import FieldViolation, InvalidArgumentError, ResourceExhaustedError
from aisemble.finetune.v1 import finetune_service_pb2, finetune_service_pb2_grpc
from aisemble.hosting.host import ModelHost
from aisemble.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from aisemble.multimodal.v1 import multimodal_service_pb2, multimodal_service_pb2_grpc
from aisemble.nlp.v1 import nlp_service_pb2, nlp_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding
from aisemble.vision.v1 import vision_service_pb2, vision_service_pb2_grpc
from tests.conftest import status_details

ALL_SERVICES = {
    "aisemble.llm.v1.LlmService": (llm_service_pb2, llm_service_pb2_grpc, "LlmService"),
    "aisemble.nlp.v1.NlpService": (nlp_service_pb2, nlp_service_pb2_grpc, "NlpService"),
    "aisemble.vision.v1.VisionService": (vision_service_pb2, vision_service_pb2_grpc, "VisionService"),
    "aisemble.multimodal.v1.MultimodalService": (
        multimodal_service_pb2,
        multimodal_service_pb2_grpc,
        "MultimodalService",
    ),
    "aisemble.ensemble.v1.EnsembleService": (ensemble_service_pb2, ensemble_service_pb2_grpc, "EnsembleService"),
    "aisemble.finetune.v1.FineTuneService": (finetune_service_pb2, finetune_service_pb2_grpc, "FineTuneService"),
    "aisemble.registry.v1.ModelRegistryService": (
        registry_service_pb2,
        registry_service_pb2_grpc,
        "ModelRegistryService",
    ),
}


class FaultyNlp(nlp_service_pb2_grpc.NlpServiceServicer):
    """Raises on purpose: a bug, a domain error, and a slow call for draining and concurrency tests."""

    async def Embed(self, request, context):
        raise RuntimeError("secret detail: password=hunter2")

    async def Classify(self, request, context):
        raise InvalidArgumentError(
            "texts: must not be empty", field_violations=[FieldViolation("texts", "must not be empty")]
        )

    async def DetectLanguage(self, request, context):
        await asyncio.sleep(0.6)
        return nlp_service_pb2.DetectLanguageResponse()


class FaultyLlm(llm_service_pb2_grpc.LlmServiceServicer):
    """A stream that fails after its first message."""

    async def StreamComplete(self, request, context):
        yield llm_service_pb2.StreamCompleteResponse(text="first")
        raise ResourceExhaustedError("quota used up", retry_after_s=2.0)


def _bindings(overrides=None):
    overrides = overrides or {}
    bindings = []
    for full_name, (_pb2, grpc_module, short) in ALL_SERVICES.items():
        servicer = overrides.get(full_name) or getattr(grpc_module, f"{short}Servicer")()
        bindings.append(ServiceBinding(full_name, servicer, getattr(grpc_module, f"add_{short}Servicer_to_server")))
    return bindings


def _server(**config):
    overrides = {"aisemble.nlp.v1.NlpService": FaultyNlp(), "aisemble.llm.v1.LlmService": FaultyLlm()}
    return AisembleServer(ServerConfig(name="test", **config), _bindings(overrides))


async def test_health_reports_serving_overall_and_per_service(start_server):
    channel = await start_server(_server())
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ["", *ALL_SERVICES]:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no-such-thing"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_every_aisemble_service(start_server):
    channel = await start_server(_server())
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = set()
    async for reply in call:
        names |= {s.name for s in reply.list_services_response.service}
    assert set(ALL_SERVICES) <= names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_domain_error_reaches_the_client_with_details(start_server):
    channel = await start_server(_server())
    stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Classify(nlp_service_pb2.ClassifyRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _status, details = status_details(caught.value)
    assert details["ErrorInfo"].domain == "aisemble" and details["ErrorInfo"].reason == "INVALID_ARGUMENT"
    assert details["BadRequest"].field_violations[0].field == "texts"


async def test_unexpected_exception_is_internal_without_traceback(start_server):
    channel = await start_server(_server())
    stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(nlp_service_pb2.EmbedRequest())
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    text = caught.value.details()
    assert "hunter2" not in text and "Traceback" not in text and "RuntimeError" not in text
    _status, details = status_details(caught.value)
    assert details["ErrorInfo"].metadata["request_id"] in text


async def test_stream_failing_midway_ends_with_a_status(start_server):
    channel = await start_server(_server())
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    call = stub.StreamComplete(llm_service_pb2.StreamCompleteRequest(model="x", prompt="y"))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for reply in call:
            received.append(reply.text)
    assert received == ["first"]
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _status, details = status_details(caught.value)
    assert details["RetryInfo"].retry_delay.seconds == 2


async def test_unimplemented_rpc_is_unimplemented(start_server):
    channel = await start_server(_server())
    stub = ensemble_service_pb2_grpc.EnsembleServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Run(ensemble_service_pb2.RunRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_max_message_size_is_enforced(start_server):
    channel = await start_server(_server(max_message_bytes=64 * 1024))
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(llm_service_pb2.CompleteRequest(model="x", prompt="a" * 100_000))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_max_concurrent_rpcs_is_enforced(start_server):
    channel = await start_server(_server(max_concurrent_rpcs=1))
    stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
    results = await asyncio.gather(
        *(stub.DetectLanguage(nlp_service_pb2.DetectLanguageRequest()) for _ in range(3)), return_exceptions=True
    )
    codes = sorted(r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results)
    assert "OK" in codes and "RESOURCE_EXHAUSTED" in codes


async def test_metrics_count_requests_by_code(start_server):
    server = _server(metrics_port=0)
    channel = await start_server(server)
    stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Classify(nlp_service_pb2.ClassifyRequest())
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'aisemble_rpc_requests_total{code="INVALID_ARGUMENT",method="Classify"' in text
    assert "aisemble_rpc_latency_seconds_bucket" in text


async def test_graceful_shutdown_drains_in_flight_calls(start_server):
    server = _server()
    channel = await start_server(server)
    stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
    health_stub = health_pb2_grpc.HealthStub(channel)
    watch = health_stub.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    in_flight = asyncio.ensure_future(stub.DetectLanguage(nlp_service_pb2.DetectLanguageRequest()))
    await asyncio.sleep(0.1)
    stopping = asyncio.ensure_future(server.stop(grace_s=5))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert isinstance(await in_flight, nlp_service_pb2.DetectLanguageResponse)  # drained, not cut
    await stopping


class _Backend:
    def __init__(self, spec, store):
        self.spec = spec

    def load(self):
        if self.spec.name == "broken":
            raise RuntimeError("weights missing")

    def cleanup(self):
        pass


async def test_per_model_health_follows_loading(start_server):
    specs = [
        model_from_mapping("good", {"task": "embedding", "provider": "onnxruntime"}),
        model_from_mapping("broken", {"task": "embedding", "provider": "onnxruntime"}),
    ]
    host = ModelHost(specs, None, backend_factory=_Backend)
    server = AisembleServer(ServerConfig(name="test"), _bindings(), model_host=host)
    channel = await start_server(server)
    stub = health_pb2_grpc.HealthStub(channel)
    await asyncio.sleep(0.05)  # health updates are scheduled on the loop
    good = await stub.Check(health_pb2.HealthCheckRequest(service="good"))
    broken = await stub.Check(health_pb2.HealthCheckRequest(service="broken"))
    overall = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert good.status == health_pb2.HealthCheckResponse.SERVING
    assert broken.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert "weights missing" in host.models["broken"].error


async def test_streams_cancelled_while_the_server_sends_leave_it_serving(tmp_path):
    """A client that cancels a stream while the server is still sending (WatchModels with the current models,
    two read, then cancel): the server's call ends in its own task, with no error and no crash (once, the
    finished call's peer was read after the call was gone: a segfault)."""
    from tests.integration.conftest import registry_process

    async with registry_process(tmp_path) as registry:
        async with grpc.aio.insecure_channel(registry.address) as channel:
            stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
            for _ in range(20):
                call = stub.WatchModels(registry_service_pb2.WatchModelsRequest(send_current_models=True), timeout=10)
                await call.read()
                await call.read()
                call.cancel()
                listed = await stub.ListModels(registry_service_pb2.ListModelsRequest(), timeout=10)
                assert listed.models
        assert registry.process.returncode is None
    assert registry.stderr.count("WatchModels code=CANCELLED") == 20, registry.stderr[-3000:]
    assert " ERROR " not in registry.stderr and "Traceback" not in registry.stderr, registry.stderr[-3000:]
