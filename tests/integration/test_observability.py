"""One trace per request across a real gateway and real services (an in-memory span exporter), and the per-model
Prometheus figures of the gateway and the LLM service after known traffic."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import urllib.request

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aisemble.ensemble.v1 import ensemble_service_pb2 as epb
from aisemble.ensemble.v1 import ensemble_service_pb2_grpc
from aisemble.llm.v1 import llm_service_pb2 as lpb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.rpc.logs import ACCESS_LOGGER
from aisemble.rpc.server import ServerConfig
from aisemble.rpc.telemetry import install_tracing, uninstall_tracing
from aisemble.vision.v1 import vision_service_pb2_grpc
from services.ensemble.app import build_server as build_ensemble
from tests.deploy.test_observability_assets import EXPORTED_METRICS
from tests.integration.conftest import LLM_MODELS, build_gateway, mesh_for, wait_serving, write_registry
from tests.integration.test_vision_stream import FAST, _frames, _send

MODEL = "smollm2-135m"


@pytest.fixture
def spans():
    """Tracing on for one test, every span kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    install_tracing(provider)
    yield exporter
    uninstall_tracing()
    provider.shutdown()


@pytest.fixture
async def mesh(llm, vision, registry, store, tmp_path, start_server):
    """A gateway (with its registry) over the session's LLM and vision servers, and an ensemble service calling
    back through it. Yields (gateway server, LLM stub, vision stub, ensemble stub), each through the gateway."""
    names = [*LLM_MODELS, FAST]
    path = write_registry(tmp_path / "models.yaml", registry, names)
    gateway_server = build_gateway(
        ServerConfig(name="gateway", metrics_port=0),
        mesh_for(llm=[f"127.0.0.1:{llm[0].port}"], vision=[f"127.0.0.1:{vision[0].port}"]),
        registry_path=path,
        store_root=store.root,
    )
    channel = await start_server(gateway_server)
    await wait_serving(gateway_server, names)
    ensemble = build_ensemble(
        ServerConfig(name="ensemble"), mesh_for(), gateway_target=f"127.0.0.1:{gateway_server.port}"
    )
    ensemble_channel = await start_server(ensemble)
    return (
        gateway_server,
        llm_service_pb2_grpc.LlmServiceStub(channel),
        vision_service_pb2_grpc.VisionServiceStub(channel),
        ensemble_service_pb2_grpc.EnsembleServiceStub(ensemble_channel),
    )


def _caller() -> tuple[str, str, list[tuple[str, str]]]:
    """A caller's own trace: (trace id, its span id, the metadata carrying them as a W3C traceparent)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, [("traceparent", f"00-{trace_id}-{span_id}-01"), ("x-request-id", f"req-{span_id}")]


async def _trace(exporter: InMemorySpanExporter, trace_id: str, names: set[str]) -> list:
    """The finished spans of one trace, once every name in `names` is among them (spans end as calls end)."""
    for _ in range(100):
        found = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
        if names <= {s.name for s in found}:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"the trace lacks {names - {s.name for s in found}}: {sorted(s.name for s in found)}")


def _one(found, name: str, parent=None):
    """The one span of that name (and that parent span, when given)."""
    matches = [s for s in found if s.name == name and (parent is None or (s.parent and s.parent.span_id == parent))]
    assert len(matches) == 1, f"{len(matches)} spans named {name} (parent {parent}): {[s.name for s in found]}"
    return matches[0]


async def test_a_streamed_completion_is_one_trace_from_gateway_to_decode(mesh, spans):
    _gateway, llm, _, _ = mesh
    trace_id, caller_span, metadata = _caller()
    # Exactly five tokens (sampled: the end-of-sequence token could otherwise come first), so it ends by LENGTH.
    request = lpb.StreamCompleteRequest(
        prompt="The capital of France is", model=MODEL, max_output_tokens=5, min_output_tokens=5
    )
    replies = [reply async for reply in llm.StreamComplete(request, metadata=metadata)]
    usage = replies[-1].usage
    method = "aisemble.llm.v1.LlmService/StreamComplete"
    found = await _trace(spans, trace_id, {method, "llm.decode"})
    assert {s.context.trace_id for s in found} == {int(trace_id, 16)}

    gateway = _one(found, method, parent=int(caller_span, 16))  # the caller's traceparent is honoured
    selection = _one(found, "selection", parent=gateway.context.span_id)
    assert selection.attributes["aisemble.model"] == MODEL
    assert selection.attributes["aisemble.selection.reason"] == replies[0].selection.reason
    upstream = _one(found, f"upstream {method}", parent=gateway.context.span_id)
    service = _one(found, method, parent=upstream.context.span_id)  # the context crossed the gRPC hop
    for step in ("llm.queue_wait", "llm.prefill", "llm.decode"):
        _one(found, step, parent=service.context.span_id)
    decode = _one(found, "llm.decode")
    assert decode.attributes["gen_ai.usage.output_tokens"] == usage.output_tokens
    assert _one(found, "llm.prefill").attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    for server_span in (gateway, service):  # a stream's span ends with its finish reason and usage
        assert server_span.attributes["aisemble.model"] == MODEL
        assert server_span.attributes["gen_ai.usage.output_tokens"] == usage.output_tokens
        assert server_span.attributes["gen_ai.response.finish_reasons"] == ("FINISH_REASON_LENGTH",)
        assert server_span.attributes["aisemble.request_id"] == f"req-{caller_span}"
        assert server_span.attributes["rpc.grpc.status_code"] == 0
    assert gateway.start_time <= upstream.start_time <= service.start_time
    assert service.end_time <= upstream.end_time <= gateway.end_time


async def test_a_stream_detect_is_one_trace_with_a_span_per_frame(mesh, spans):
    _gateway, _, vision, _ = mesh
    trace_id, caller_span, metadata = _caller()
    frames = _frames(3, model=FAST)
    replies = [reply async for reply in vision.StreamDetect(_send(frames), metadata=metadata)]
    assert [r.frame_index for r in replies] == [0, 1, 2]
    method = "aisemble.vision.v1.VisionService/StreamDetect"
    found = await _trace(spans, trace_id, {method, "vision.inference"})
    gateway = _one(found, method, parent=int(caller_span, 16))
    upstream = _one(found, f"upstream {method}", parent=gateway.context.span_id)
    service = _one(found, method, parent=upstream.context.span_id)
    frame_spans = [s for s in found if s.name == "vision.frame"]
    assert sorted(s.attributes["aisemble.frame.index"] for s in frame_spans) == [0, 1, 2]
    assert all(s.parent.span_id == service.context.span_id for s in frame_spans)
    by_frame = {s.context.span_id: s for s in frame_spans}
    for step in ("image.decode", "vision.inference"):
        steps = [s for s in found if s.name == step]
        assert len(steps) == 3 and all(s.parent.span_id in by_frame for s in steps), step
    assert _one(found, "vision.inference", parent=frame_spans[0].context.span_id).attributes["aisemble.model"] == FAST
    assert gateway.attributes["aisemble.replies"] == 3


async def test_an_ensemble_of_two_is_one_trace_through_the_gateway_twice(mesh, spans):
    _gateway, _, _, ensemble = mesh
    trace_id, caller_span, metadata = _caller()
    request = epb.RunRequest(
        members=[epb.Member(model=m) for m in LLM_MODELS],
        completion=lpb.CompleteRequest(prompt="The capital of France is", max_output_tokens=4, temperature=0),
    )
    reply = await ensemble.Run(request, metadata=metadata)
    assert all(r.HasField("completion") for r in reply.member_results)
    complete = "aisemble.llm.v1.LlmService/Complete"
    found = await _trace(spans, trace_id, {"aisemble.ensemble.v1.EnsembleService/Run", "llm.decode"})
    root = _one(found, "aisemble.ensemble.v1.EnsembleService/Run", parent=int(caller_span, 16))
    members = [s for s in found if s.name == "ensemble.member"]
    assert sorted(s.attributes["aisemble.model"] for s in members) == sorted(LLM_MODELS)
    assert all(s.parent.span_id == root.context.span_id for s in members)
    for member in members:  # each member: the gateway's span, its upstream call, the LLM service's, its decode
        gateway = _one(found, complete, parent=member.context.span_id)
        assert gateway.attributes["aisemble.model"] == member.attributes["aisemble.model"]
        upstream = _one(found, f"upstream {complete}", parent=gateway.context.span_id)
        service = _one(found, complete, parent=upstream.context.span_id)
        _one(found, "llm.decode", parent=service.context.span_id)


async def test_a_multimodal_analysis_is_one_trace_over_its_parts(vision, nlp, start_server, spans):
    """MultimodalService.Analyze passes its span's context to every part it calls: detection and OCR at the
    vision service, language (and mentions by meaning) at the NLP service, each a child of the Analyze span."""
    from aisemble.common.v1 import common_pb2
    from aisemble.multimodal.v1 import multimodal_service_pb2 as mpb
    from aisemble.multimodal.v1 import multimodal_service_pb2_grpc
    from services.multimodal.app import build_server as build_multimodal
    from tests.assets.pictures import bus_jpg

    server = build_multimodal(
        ServerConfig(name="multimodal"),
        None,
        {},
        vision_target=f"127.0.0.1:{vision[0].port}",
        nlp_target=f"127.0.0.1:{nlp[0].port}",
    )
    analyzer = multimodal_service_pb2_grpc.MultimodalServiceStub(await start_server(server))
    trace_id, caller_span, metadata = _caller()
    request = mpb.AnalyzeRequest(image=common_pb2.Image(data=bus_jpg()), text="A bus in the street.")
    reply = await analyzer.Analyze(request, metadata=metadata, timeout=60)
    assert not reply.part_failures, reply.part_failures
    analyze = "aisemble.multimodal.v1.MultimodalService/Analyze"
    parts = {
        "aisemble.vision.v1.VisionService/Detect",
        "aisemble.vision.v1.VisionService/Recognize",
        "aisemble.nlp.v1.NlpService/DetectLanguage",
    }
    found = await _trace(spans, trace_id, {analyze, *parts})
    root = _one(found, analyze, parent=int(caller_span, 16))
    for part in parts:
        _one(found, part, parent=root.context.span_id)
    assert _one(
        found, "vision.inference", parent=_one(found, "aisemble.vision.v1.VisionService/Detect").context.span_id
    )


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return answer.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{.*\})? ([^ ]+)$", line)
        if not match or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total, found = total + float(match.group(3)), True
    return total if found else 0.0


async def test_the_gateway_and_the_service_count_each_model_request(mesh, llm, caplog):
    gateway_server, stub, _, _ = mesh
    llm_server = llm[0]
    llm_server.metrics_port = llm_server.metrics_port or _serve_metrics(llm_server)
    before = (_scrape(gateway_server.metrics_port), _scrape(llm_server.metrics_port))
    stream = lpb.StreamCompleteRequest(  # sampled: not cacheable, each runs the model
        prompt="Count to ten:", model=MODEL, max_output_tokens=4, min_output_tokens=4, temperature=0.8
    )
    complete = lpb.CompleteRequest(prompt="Count to ten:", model=MODEL, max_output_tokens=3, temperature=0)
    usages = []
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        for _ in range(2):
            replies = [r async for r in stub.StreamComplete(stream)]
            usages.append(replies[-1].usage)
        usages.append((await stub.Complete(complete)).usage)
        await stub.Complete(complete)  # the same deterministic request: from the cache, no tokens generated
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Complete(lpb.CompleteRequest(prompt="x", model=MODEL, max_output_tokens=10**6))
    after = (_scrape(gateway_server.metrics_port), _scrape(llm_server.metrics_port))

    def grew(where: int, name: str, **labels: str) -> float:
        return _value(after[where], name, **labels) - _value(before[where], name, **labels)

    gateway, service = 0, 1
    model = {"model": MODEL}
    assert grew(gateway, "aisemble_model_requests_total", method="StreamComplete", code="OK", **model) == 2
    assert grew(gateway, "aisemble_model_requests_total", method="Complete", code="OK", **model) == 2
    assert grew(gateway, "aisemble_model_requests_total", method="Complete", code="INVALID_ARGUMENT", **model) == 1
    assert grew(gateway, "aisemble_model_request_duration_seconds_count", method="StreamComplete", **model) == 2
    assert grew(gateway, "aisemble_model_time_to_first_token_seconds_count", **model) == 2
    assert grew(gateway, "aisemble_model_inter_token_latency_seconds_count", **model) == 6  # 3 gaps a stream
    assert grew(gateway, "aisemble_model_generation_tokens_total", **model) == sum(u.output_tokens for u in usages)
    assert grew(gateway, "aisemble_model_prompt_tokens_total", **model) == sum(u.prompt_tokens for u in usages)
    assert grew(gateway, "aisemble_model_cache_hits_total", **model) == 1
    assert grew(gateway, "aisemble_model_cache_misses_total", **model) == 1
    # The service saw one Complete fewer (the cache answered it) and the refused one (its own check).
    assert grew(service, "aisemble_model_requests_total", method="StreamComplete", code="OK", **model) == 2
    assert grew(service, "aisemble_model_requests_total", method="Complete", code="OK", **model) == 1
    assert grew(service, "aisemble_model_generation_tokens_total", **model) == sum(u.output_tokens for u in usages)
    assert grew(service, "aisemble_llm_batch_size_count", **model) >= 4  # decoding steps
    assert grew(service, "aisemble_llm_queue_wait_seconds_count", **model) == 3
    assert grew(service, "aisemble_llm_time_to_first_token_seconds_count", **model) == 3
    for text in after:
        assert _value(text, "process_resident_memory_bytes") > 10_000_000
        assert _value(text, "process_threads") >= 2
        assert "aisemble_calls_in_flight" in text
    assert "aisemble_batcher_queued" not in after[service]  # a family of the NLP service only
    # Every metric the dashboard and the alerts read from these two processes is exported by them.
    for where, exported in ((gateway, _names(after[gateway])), (service, _names(after[service]))):
        wanted = EXPORTED_METRICS - _OTHER_PROCESSES[where]
        assert wanted <= exported, f"not exported: {sorted(wanted - exported)}"
    # One access line per call at the gateway, with its request id, model, code and tokens; no prompt text.
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER and getattr(r, "model", "") == MODEL]
    assert len(lines) >= 8  # 5 calls at the gateway, 3 or 4 at the service
    cached = [r for r in lines if getattr(r, "cache", "") == "hit"]
    assert len(cached) == 1 and cached[0].rpc.endswith("/Complete") and cached[0].code == "OK"
    refused = [r for r in lines if r.code == "INVALID_ARGUMENT"]
    assert refused and all(r.request_id for r in refused)
    assert all("Count to ten" not in json.dumps(r.__dict__, default=str) for r in lines)


#: Families of the dashboard that the gateway (0) and the LLM service (1) do not export.
_NLP_AND_SUPERVISOR = {"aisemble_batcher_batch_size", "aisemble_batcher_queued"} | {
    "aisemble_process_restarts_total",
    "aisemble_process_up",
}
_OTHER_PROCESSES = {
    0: _NLP_AND_SUPERVISOR | {n for n in EXPORTED_METRICS if n.startswith("aisemble_llm_")},
    1: _NLP_AND_SUPERVISOR | {"aisemble_model_cache_hits_total", "aisemble_model_cache_misses_total"},
}


def _names(text: str) -> set[str]:
    """The metric names of a scrape, as the dashboard names them (histograms without their suffixes)."""
    found = set()
    for line in text.splitlines():
        match = re.match(r"^# TYPE (\S+) (\w+)", line)
        if match:
            name, kind = match.groups()
            found.add(name + "_total" if kind == "counter" and not name.endswith("_total") else name)
    return found


def _serve_metrics(server) -> int:
    from aisemble.rpc.metrics import serve_metrics

    return serve_metrics(server.metrics, "127.0.0.1", 0)


async def test_an_http_request_through_the_facade_is_one_trace(llm, nlp, registry, store, tmp_path, spans):
    """The OpenAI-compatible facade honours the caller's traceparent header and passes its own span's context to
    the gateway: HTTP span, gateway, LLM service and decode in one tree."""
    from tests.integration.openai_fixtures import ONNX, started_facade_mesh

    trace_id, caller_span, _ = _caller()
    async with started_facade_mesh(llm, nlp, registry, store, tmp_path) as facade:
        reply = await facade.client().chat.completions.create(
            model=ONNX,
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=3,
            extra_headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
    assert reply.usage.completion_tokens >= 1
    chat = "aisemble.llm.v1.LlmService/Chat"
    found = await _trace(spans, trace_id, {"POST /v1/chat/completions", "llm.decode"})
    http = _one(found, "POST /v1/chat/completions", parent=int(caller_span, 16))
    assert http.attributes["http.response.status_code"] == 200
    gateway = _one(found, chat, parent=http.context.span_id)
    upstream = _one(found, f"upstream {chat}", parent=gateway.context.span_id)
    service = _one(found, chat, parent=upstream.context.span_id)
    assert _one(found, "llm.decode", parent=service.context.span_id).attributes["gen_ai.usage.output_tokens"] == (
        reply.usage.completion_tokens
    )


async def test_a_mesh_process_exports_its_spans_over_otlp(tmp_path):
    """`aisemble serve` with OTEL_TRACES_EXPORTER=otlp sends its spans to the OTLP endpoint of the standard
    variables (a receiver this test runs), in the trace of the caller's traceparent."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    from aisemble.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
    from tests.integration.conftest import registry_process

    received = []

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        async def Export(self, request, context):
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    def exported():
        for request in received:
            for resource in request.resource_spans:
                names = {a.value.string_value for a in resource.resource.attributes if a.key == "service.name"}
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        if span.trace_id.hex() == trace_id:
                            return names, span
        return None

    receiver = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), receiver)
    otlp_port = receiver.add_insecure_port("127.0.0.1:0")
    await receiver.start()
    trace_id, caller_span, metadata = _caller()
    otlp = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    try:
        async with registry_process(tmp_path, **otlp) as registry:
            async with grpc.aio.insecure_channel(registry.address) as channel:
                stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
                await stub.ListModels(registry_service_pb2.ListModelsRequest(), metadata=metadata, timeout=30)
            for _ in range(300):
                if exported() is not None:
                    break
                await asyncio.sleep(0.1)
    finally:
        await receiver.stop(0)
    found = exported()
    assert found is not None, f"no span of the trace was exported; the process said: {registry.stderr[-2000:]}"
    names, span = found
    assert names == {"aisemble-registry"}, registry.stderr[-2000:]
    assert span.name == "aisemble.registry.v1.ModelRegistryService/ListModels"
    assert span.parent_span_id.hex() == caller_span


async def test_a_fine_tuning_job_registers_its_model_in_its_creators_trace(
    start_server, tmp_path, registry, store, spans
):
    """The job keeps the context of the call that created it: its `finetune.publish` span, minutes later and
    after a worker process trained the model, is in the creator's trace, and so is the registration it makes
    through the gateway at the registry service."""
    from tests.integration.test_finetune_errors import start_mesh, states, tiny_classifier_job, watch_all

    mesh = await start_mesh(start_server, tmp_path, registry, store)
    trace_id, caller_span, metadata = _caller()
    job = (await mesh.jobs.CreateFineTuneJob(tiny_classifier_job("traced-classifier"), metadata=metadata)).job
    assert states(await watch_all(mesh.jobs, job.job_id)) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    create, register = (
        "aisemble.finetune.v1.FineTuneService/CreateFineTuneJob",
        "aisemble.registry.v1.ModelRegistryService/RegisterModel",
    )
    found = await _trace(spans, trace_id, {create, "finetune.publish", register})
    by_id = {s.context.span_id: s for s in found}

    def ancestors(span) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    gateway = _one(found, create, parent=int(caller_span, 16))
    publish = _one(found, "finetune.publish")
    assert publish.attributes["aisemble.job_id"] == job.job_id
    assert publish.attributes["aisemble.model"] == "traced-classifier"
    assert ancestors(publish)[-1] == create and by_id[publish.parent.span_id].name == create  # the service's span
    registrations = [s for s in found if s.name == register]
    assert len(registrations) >= 2, [s.name for s in found]  # the gateway's and the registry service's
    for registration in registrations:
        assert publish.name in ancestors(registration)
    assert gateway.start_time <= publish.start_time
