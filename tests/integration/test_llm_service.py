"""The LLM service on the real SmolLM2-135M-Instruct (transformers backend), through a real grpc.aio server."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.rpc.server import AisembleServer, ServerConfig
from services.llm.app import build_server
from tests.conftest import status_details

MODEL = "smollm2-135m"
ONNX_MODEL = "smollm2-135m-onnx"
CAPITAL = [pb.ChatMessage(role=pb.CHAT_ROLE_USER, content="What is the capital of France?")]


def _backend(server: AisembleServer, model: str = MODEL):
    return server.model_host.models[model].backend


async def _collect(call):
    return [reply async for reply in call]


async def test_stream_complete_sends_several_deltas_of_coherent_english(llm):
    _server, stub, _ = llm
    replies = await _collect(
        stub.StreamComplete(
            pb.StreamCompleteRequest(
                model=MODEL, prompt="The sun is a star. The moon", max_output_tokens=24, temperature=0
            )
        )
    )
    text = "".join(r.text for r in replies)
    assert len([r for r in replies if r.text]) >= 5, "deltas were buffered instead of streamed"
    words = re.findall(r"[A-Za-z']+", text)
    assert len(words) >= 8 and sum(w.isascii() for w in words) == len(words), text
    assert replies[0].selection.model == MODEL
    last = replies[-1]
    assert last.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP)
    assert last.usage.output_tokens == sum(r.token_count for r in replies)
    assert all(r.finish_reason == pb.FINISH_REASON_UNSPECIFIED for r in replies[:-1])


async def test_chat_answers_paris(llm, registry):
    _server, stub, _ = llm
    reply = await stub.Chat(pb.ChatRequest(model=MODEL, messages=CAPITAL, max_output_tokens=24, temperature=0))
    assert "Paris" in reply.text
    assert reply.finish_reason == pb.FINISH_REASON_STOP
    spec = registry[MODEL]
    usage = reply.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.output_tokens and usage.prompt_tokens > 5
    expected = usage.prompt_tokens * spec.cost_per_input_token + usage.output_tokens * spec.cost_per_token
    assert math.isclose(usage.cost, expected, rel_tol=1e-9)
    assert reply.mean_token_logprob < 0


async def test_streamed_deltas_equal_the_unary_answer(llm):
    _server, stub, _ = llm
    request = {"model": MODEL, "messages": CAPITAL, "max_output_tokens": 32, "temperature": 0}
    unary = await stub.Chat(pb.ChatRequest(**request))
    streamed = await _collect(stub.StreamChat(pb.StreamChatRequest(**request)))
    assert "".join(r.text for r in streamed) == unary.text
    assert streamed[-1].usage.output_tokens == unary.usage.output_tokens


async def test_stop_sequence_ends_generation_and_is_not_emitted(llm):
    _server, stub, _ = llm
    reply = await stub.Chat(
        pb.ChatRequest(model=MODEL, messages=CAPITAL, max_output_tokens=24, temperature=0, stop=["Paris"])
    )
    assert "Paris" not in reply.text and reply.text.strip()
    assert reply.finish_reason == pb.FINISH_REASON_STOP_SEQUENCE


async def test_max_output_tokens_gives_length(llm):
    _server, stub, _ = llm
    reply = await stub.Complete(
        pb.CompleteRequest(model=MODEL, prompt="Count: one, two,", max_output_tokens=3, temperature=0)
    )
    assert reply.finish_reason == pb.FINISH_REASON_LENGTH and reply.usage.output_tokens == 3


async def test_min_output_tokens_holds_off_the_end_of_sequence(llm):
    _server, stub, _ = llm
    request = pb.ChatRequest(model=MODEL, messages=CAPITAL, max_output_tokens=64, temperature=0)
    natural = await stub.Chat(request)
    assert natural.finish_reason == pb.FINISH_REASON_STOP and natural.usage.output_tokens < 40
    request.min_output_tokens = request.max_output_tokens = natural.usage.output_tokens + 8
    longer = await stub.Chat(request)
    assert longer.finish_reason == pb.FINISH_REASON_LENGTH
    assert longer.usage.output_tokens == natural.usage.output_tokens + 8
    assert longer.text.startswith(natural.text)


async def test_seed_makes_sampling_reproducible(llm):
    _server, stub, _ = llm

    async def sample(seed):
        request = pb.CompleteRequest(
            model=MODEL, prompt="My favourite animal is", max_output_tokens=12, temperature=1.0, top_p=0.95, seed=seed
        )
        return (await stub.Complete(request)).text

    first = await sample(1234)
    assert await sample(1234) == first
    others = {await sample(seed) for seed in (1, 2, 3)}
    assert others != {first}


@pytest.mark.parametrize("model", [MODEL, ONNX_MODEL])
async def test_cancelled_stream_stops_the_backend(llm, model):
    server, stub, _ = llm
    backend = _backend(server, model)
    before = backend.tokens_generated
    call = stub.StreamComplete(
        pb.StreamCompleteRequest(
            model=model,
            prompt="Write a very long story about a dragon.",
            max_output_tokens=1000,
            temperature=0.8,
            seed=1,
        )
    )
    received = 0
    async for reply in call:
        received += bool(reply.text)
        if received >= 3:
            break
    assert backend.active_sequences == 1
    call.cancel()
    deadline = time.monotonic() + 3
    while backend.active_sequences and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert backend.active_sequences == 0, "the generation went on after the client cancelled"
    produced = backend.tokens_generated
    await asyncio.sleep(0.3)
    assert backend.tokens_generated == produced
    assert produced - before < 200, "far more tokens than were read: cancellation came late"


async def test_deadline_stops_the_backend(llm):
    server, stub, _ = llm
    backend = _backend(server)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(
                model=MODEL, prompt="Tell me everything about history.", max_output_tokens=1000, temperature=0
            ),
            timeout=0.8,
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 3
    while backend.active_sequences and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert backend.active_sequences == 0


async def test_other_rpcs_answer_during_a_long_generation(llm):
    _server, stub, channel = llm
    long_call = stub.StreamComplete(
        pb.StreamCompleteRequest(
            model=MODEL, prompt="Write a long essay about rivers.", max_output_tokens=200, temperature=0
        )
    )
    await long_call.read()
    health = health_pb2_grpc.HealthStub(channel)
    started = time.monotonic()
    reply = await health.Check(health_pb2.HealthCheckRequest(service=MODEL))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert time.monotonic() - started < 0.5, "health waited for the model: compute is on the event loop"
    second = stub.StreamComplete(pb.StreamCompleteRequest(model=MODEL, prompt="Hi", max_output_tokens=4, temperature=0))
    assert len(await _collect(second)) >= 1
    long_call.cancel()


# --- bad input: each a clear status, never UNKNOWN/INTERNAL, and the server keeps serving ---

BAD_REQUESTS = [
    ("missing prompt", "Complete", {"model": MODEL}, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
    ("missing messages", "Chat", {"model": MODEL}, grpc.StatusCode.INVALID_ARGUMENT, "messages"),
    ("empty model", "Complete", {"prompt": "hi"}, grpc.StatusCode.INVALID_ARGUMENT, "model"),
    ("unknown model", "Complete", {"model": "gpt-17", "prompt": "hi"}, grpc.StatusCode.NOT_FOUND, None),
    (
        "zero max tokens",
        "Complete",
        {"model": MODEL, "prompt": "hi", "max_output_tokens": 0},
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_output_tokens",
    ),
    (
        "negative max tokens",
        "Complete",
        {"model": MODEL, "prompt": "hi", "max_output_tokens": -4},
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_output_tokens",
    ),
    (
        "max tokens above limit",
        "Complete",
        {"model": MODEL, "prompt": "hi", "max_output_tokens": 100_000},
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_output_tokens",
    ),
    (
        "negative temperature",
        "Complete",
        {"model": MODEL, "prompt": "hi", "temperature": -0.5},
        grpc.StatusCode.INVALID_ARGUMENT,
        "temperature",
    ),
    (
        "NaN temperature",
        "Complete",
        {"model": MODEL, "prompt": "hi", "temperature": float("nan")},
        grpc.StatusCode.INVALID_ARGUMENT,
        "temperature",
    ),
    (
        "top_p zero",
        "Complete",
        {"model": MODEL, "prompt": "hi", "top_p": 0.0},
        grpc.StatusCode.INVALID_ARGUMENT,
        "top_p",
    ),
    (
        "top_p above one",
        "Complete",
        {"model": MODEL, "prompt": "hi", "top_p": 1.5},
        grpc.StatusCode.INVALID_ARGUMENT,
        "top_p",
    ),
    (
        "negative min tokens",
        "Complete",
        {"model": MODEL, "prompt": "hi", "min_output_tokens": -1},
        grpc.StatusCode.INVALID_ARGUMENT,
        "min_output_tokens",
    ),
    (
        "min tokens above max tokens",
        "Complete",
        {"model": MODEL, "prompt": "hi", "min_output_tokens": 9, "max_output_tokens": 8},
        grpc.StatusCode.INVALID_ARGUMENT,
        "min_output_tokens",
    ),
    (
        "too many stops",
        "Complete",
        {"model": MODEL, "prompt": "hi", "stop": [f"s{i}" for i in range(9)]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "stop",
    ),
    (
        "10 MB prompt",
        "Complete",
        {"model": MODEL, "prompt": "a" * (10 * 1024 * 1024)},
        grpc.StatusCode.INVALID_ARGUMENT,
        "prompt",
    ),
]


@pytest.mark.parametrize(("case", "method", "fields", "code", "field"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
async def test_bad_input_gets_a_clear_status(llm, case, method, fields, code, field):
    _server, stub, _ = llm
    request = (pb.ChatRequest if method == "Chat" else pb.CompleteRequest)(**fields)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub, method)(request)
    assert caught.value.code() == code, caught.value.details()
    _status, details = status_details(caught.value)
    assert details["ErrorInfo"].domain == "aisemble"
    if field is not None:
        assert field in [v.field for v in details["BadRequest"].field_violations]


async def test_prompt_longer_than_the_context_reports_token_counts(llm):
    _server, stub, _ = llm
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model=MODEL, prompt="hello " * 9000, max_output_tokens=16))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _status, details = status_details(caught.value)
    info = details["ErrorInfo"]
    assert info.reason == "PROMPT_TOO_LONG"
    assert int(info.metadata["prompt_tokens"]) > 8000 and info.metadata["context_window"] == "8192"


async def test_server_still_serves_after_bad_input(llm):
    _server, stub, _ = llm
    reply = await stub.Complete(pb.CompleteRequest(model=MODEL, prompt="Hello", max_output_tokens=2, temperature=0))
    assert reply.usage.output_tokens >= 1


async def test_more_concurrent_generations_than_configured_is_resource_exhausted(registry, store, start_server):
    # A batched model admits its own generations (one layer): a batch of one and no waiting room.
    spec = dataclasses.replace(registry[MODEL], params={"max_batch_size": 1, "max_waiting": 0})
    server = build_server(ServerConfig(name="llm"), None, {MODEL: spec}, store=store)
    channel = await start_server(server)
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    first = stub.StreamComplete(
        pb.StreamCompleteRequest(model=MODEL, prompt="Tell a story.", max_output_tokens=64, temperature=0)
    )
    await first.read()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model=MODEL, prompt="Hi", max_output_tokens=2))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _status, details = status_details(caught.value)
    assert "RetryInfo" in details
    assert details["ErrorInfo"].reason == "BATCH_QUEUE_FULL"
    first.cancel()
