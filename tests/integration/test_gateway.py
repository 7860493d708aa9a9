"""The gateway in front of a real LLM service: routing, streaming pass-through, auto selection, cache, registry."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from aisemble.common.v1 import common_pb2
from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.nlp.v1 import nlp_service_pb2, nlp_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from aisemble.vision.v1 import vision_service_pb2, vision_service_pb2_grpc
from tests.conftest import status_details
from tests.integration.conftest import LLM_MODELS, build_gateway, mesh_for, wait_serving, write_registry

CAPITAL = [pb.ChatMessage(role=pb.CHAT_ROLE_USER, content="What is the capital of France?")]
REGISTERED = (*LLM_MODELS, "minilm-l6", "yolov8-fall")


@pytest.fixture
async def gateway(llm, registry, store, tmp_path, start_server):
    """A gateway whose llm upstream is the session's LLM server; vision points at a closed port."""
    server, _stub, _ = llm
    path = write_registry(tmp_path / "models.yaml", registry, REGISTERED)
    mesh = mesh_for(llm=[f"127.0.0.1:{server.port}"], vision=["127.0.0.1:9"], nlp=["127.0.0.1:9"])
    gateway_server = build_gateway(ServerConfig(name="gateway"), mesh, registry_path=path, store_root=store.root)
    channel = await start_server(gateway_server)
    await wait_serving(gateway_server, LLM_MODELS)
    return gateway_server, channel, path


async def test_complete_by_name_matches_the_service(gateway, llm):
    _server, channel, _ = gateway
    direct = await llm[1].Complete(
        pb.CompleteRequest(model="smollm2-135m", prompt="Hello, my name is", max_output_tokens=8, temperature=0)
    )
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    call = stub.Complete(
        pb.CompleteRequest(model="smollm2-135m", prompt="Hello, my name is", max_output_tokens=8, temperature=0)
    )
    reply = await call
    assert reply.text == direct.text
    assert reply.selection.model == "smollm2-135m" and not reply.selection.automatic
    trailers = dict(await call.trailing_metadata())
    assert trailers["aisemble-model"] == "smollm2-135m"


async def test_stream_passes_through_without_buffering(gateway):
    _server, channel, _ = gateway
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    started = time.monotonic()
    arrivals = []
    async for _reply in stub.StreamComplete(
        pb.StreamCompleteRequest(
            model="smollm2-135m-onnx", prompt="Once upon a time", max_output_tokens=40, temperature=0
        )
    ):
        arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 10
    assert arrivals[0] < arrivals[-1] / 3, "the first token waited for the whole generation"


async def test_auto_picks_a_healthy_llm_and_says_why(gateway):
    _server, channel, _ = gateway
    text = "The patient shows symptoms of fever. What should I do?"
    registry_stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    resolved = await registry_stub.ResolveModel(
        rpb.ResolveModelRequest(task=common_pb2.TASK_TEXT_GENERATION, model="auto", text=text, max_output_tokens=8)
    )
    assert resolved.detected_domain == "medical"
    assert {c.model for c in resolved.candidates} == set(LLM_MODELS)

    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    messages = [pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=text)]
    call = stub.Chat(pb.ChatRequest(model="auto", messages=messages, max_output_tokens=8, temperature=0))
    reply = await call
    assert reply.selection.automatic and reply.selection.model == resolved.selection.model
    assert "domain medical" in reply.selection.reason and "patient" in reply.selection.reason
    trailers = dict(await call.trailing_metadata())
    assert trailers["aisemble-model"] == reply.selection.model and "medical" in trailers["aisemble-selection-reason"]


async def test_auto_explains_a_japanese_prompt(gateway):
    _server, channel, _ = gateway
    registry_stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    resolved = await registry_stub.ResolveModel(
        rpb.ResolveModelRequest(
            task=common_pb2.TASK_TEXT_GENERATION, model="auto", text="契約書のレビューをお願いします"
        )
    )
    assert resolved.detected_language == "ja" and resolved.detected_domain == "legal"
    assert all("does not list ja" in c.reason for c in resolved.candidates)


async def test_auto_with_no_healthy_candidate_is_failed_precondition(gateway):
    _server, channel, _ = gateway
    stub = vision_service_pb2_grpc.VisionServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Detect(vision_service_pb2.DetectRequest(model="auto", image=common_pb2.Image(data=b"x")))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "yolov8-fall: not healthy" in caught.value.details()


async def test_unknown_model_and_wrong_task(gateway):
    _server, channel, _ = gateway
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model="gpt-17", prompt="hi"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert status_details(caught.value)[1]["ErrorInfo"].reason == "MODEL_NOT_FOUND"
    nlp = nlp_service_pb2_grpc.NlpServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await nlp.Embed(nlp_service_pb2.EmbedRequest(model="smollm2-135m", texts=["hi"]))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(prompt="hi"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_upstream_down_is_unavailable_with_retry_info(gateway):
    _server, channel, _ = gateway
    stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(nlp_service_pb2.EmbedRequest(model="minilm-l6", texts=["hi"]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    _status, details = status_details(caught.value)
    assert "RetryInfo" in details


async def test_service_errors_pass_through_with_their_details(gateway):
    _server, channel, _ = gateway
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model="smollm2-135m", prompt="hi", top_p=7))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status_details(caught.value)[1]["BadRequest"].field_violations[0].field == "top_p"


async def test_deterministic_results_are_cached_and_streams_replayed(gateway):
    server, channel, _ = gateway
    cache = server.gateway.cache
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    request = pb.CompleteRequest(
        model="smollm2-135m-onnx", prompt="Paris is the capital of", max_output_tokens=6, temperature=0
    )
    first = await stub.Complete(request)
    hits = cache.hits
    second = await stub.Complete(request)
    assert cache.hits == hits + 1 and second.text == first.text

    stream_request = pb.StreamCompleteRequest(
        model="smollm2-135m-onnx", prompt="Rome is in", max_output_tokens=6, temperature=0
    )
    live = [r async for r in stub.StreamComplete(stream_request)]
    replayed = [r async for r in stub.StreamComplete(stream_request)]
    assert cache.hits == hits + 2
    assert [r.text for r in replayed] == [r.text for r in live] and replayed[-1].usage == live[-1].usage

    sampled = pb.CompleteRequest(model="smollm2-135m-onnx", prompt="Hi", max_output_tokens=2, temperature=0.9)
    await stub.Complete(sampled)
    await stub.Complete(sampled)
    assert cache.hits == hits + 2, "a sampled request without a seed must not be cached"


async def test_cancellation_through_the_gateway_reaches_the_backend(gateway, llm):
    _server, channel, _ = gateway
    backend = llm[0].model_host.models["smollm2-135m"].backend
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    call = stub.StreamComplete(
        pb.StreamCompleteRequest(
            model="smollm2-135m",
            prompt="Chapter 1. Once upon a time, in a land far away, there lived",
            max_output_tokens=1000,
            temperature=0,
        )
    )
    await call.read()
    assert backend.active_sequences == 1
    call.cancel()
    deadline = time.monotonic() + 3
    while backend.active_sequences and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert backend.active_sequences == 0


async def test_deadline_passes_through(gateway, llm):
    _server, channel, _ = gateway
    backend = llm[0].model_host.models["smollm2-135m"].backend
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(
                model="smollm2-135m",
                prompt="Chapter 2. The old lighthouse keeper climbed the stairs and",
                max_output_tokens=1000,
                temperature=0,
            ),
            timeout=0.7,
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 3
    while backend.active_sequences and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert backend.active_sequences == 0


async def test_live_figures_in_the_registry(gateway):
    _server, channel, _ = gateway
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    for seed in (1, 2):
        await stub.Complete(
            pb.CompleteRequest(
                model="smollm2-135m-onnx", prompt="Hi there", max_output_tokens=4, temperature=0.5, seed=seed
            )
        )
    registry_stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    model = (await registry_stub.GetModel(rpb.GetModelRequest(name="smollm2-135m-onnx"))).model
    assert model.health == rpb.MODEL_HEALTH_SERVING
    assert model.stats.request_count >= 2 and model.stats.output_tokens >= 2
    assert model.stats.latency_p50.ToNanoseconds() > 0 and model.stats.tokens_per_second > 0
    assert model.stats.cost_total > 0
