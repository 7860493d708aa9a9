"""Continuous batching on the real SmolLM2: a sequence's output in a batch is exactly its output alone."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import pytest

from aisemble.errors import ResourceExhaustedError
from aisemble.hosting.backend import RequestContext
from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from services.llm.app import build_server
from services.llm.scheduler import BatchLimits, ContinuousBatcher
from services.llm.types import ChatTurn, FinishReason, GenerationRequest, SamplingParams
from tests.conftest import status_details
from tests.integration.conftest import LLM_MODELS

_POOL = ThreadPoolExecutor(4, thread_name_prefix="test-batcher")
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves falling slowly.",
    "List three uses of copper.",
    "Explain gravity to a child in two sentences.",
    "Hi",
    "Translate 'good morning' into Spanish, French and German, one per line please.",
    "Why is the sky blue?",
    "Give me a short motivational quote.",
]


def _requests(seeded: bool = False) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            sampling=SamplingParams(
                max_output_tokens=6 + 2 * i,
                temperature=0.8 if seeded else 0.0,
                seed=100 + i if seeded else None,
            ),
            messages=(ChatTurn("user", prompt),),
        )
        for i, prompt in enumerate(PROMPTS)
    ]


@contextlib.contextmanager
def _no_prefix_reuse(batcher: ContinuousBatcher) -> Iterator[None]:
    """The batcher's prefix cache off for the block (its entries kept for later tests)."""
    budget, batcher.prefix_cache.max_bytes = batcher.prefix_cache.max_bytes, 0
    try:
        yield
    finally:
        batcher.prefix_cache.max_bytes = budget


@pytest.mark.parametrize("model", LLM_MODELS)
@pytest.mark.parametrize("seeded", [False, True], ids=["greedy", "seeded"])
def test_batch_of_8_equals_each_alone(llm, model, seeded):
    server, _stub, _ = llm
    backend = server.model_host.models[model].backend
    assert backend.batcher is not None
    requests = _requests(seeded)
    with _no_prefix_reuse(backend.batcher):  # every prompt prefilled in full: alone, then together
        alone = [backend.run(r, RequestContext()) for r in requests]
        before = backend.batcher.stats.max_batch_seen
        backend.batcher.stats.max_batch_seen = backend.batcher.stats.max_prefill_seen = 0
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(lambda r: backend.run(r, RequestContext()), requests))
    assert backend.batcher.stats.max_batch_seen >= 4, "the sequences were not decoded together"
    assert backend.batcher.stats.max_prefill_seen >= 2, "the arrivals were not prefilled together"
    backend.batcher.stats.max_batch_seen = max(before, backend.batcher.stats.max_batch_seen)
    for single, batched in zip(alone, together, strict=True):
        assert batched.token_ids == single.token_ids
        assert batched.text == single.text and batched.finish_reason == single.finish_reason


async def test_cancelling_one_of_8_streams_leaves_the_others_complete(llm):
    server, stub, _ = llm
    model = "smollm2-135m-onnx"
    backend = server.model_host.models[model].backend
    requests = _requests()
    alone = [backend.run(r, RequestContext()).text for r in requests]

    async def run(index: int) -> str | None:
        request = pb.StreamChatRequest(
            model=model,
            messages=[pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=PROMPTS[index])],
            max_output_tokens=requests[index].sampling.max_output_tokens,
            temperature=0,
        )
        call = stub.StreamChat(request)
        text = ""
        async for reply in call:
            text += reply.text
            if index == 3 and text:
                call.cancel()
                return None
        return text

    results = await asyncio.gather(*(run(i) for i in range(len(requests))), return_exceptions=True)
    for index, result in enumerate(results):
        if index == 3:
            assert result is None or isinstance(result, asyncio.CancelledError)
        else:
            assert result == alone[index], f"stream {index} changed when another was cancelled"
    for _ in range(50):
        if backend.batcher.running == 0:
            break
        await asyncio.sleep(0.05)
    assert backend.batcher.running == 0


async def test_a_request_arriving_during_a_long_generation_is_not_starved(llm):
    _server, stub, _ = llm
    model = "smollm2-135m-onnx"
    long_request = pb.StreamCompleteRequest(
        model=model, prompt="Once upon a time", max_output_tokens=160, min_output_tokens=160, temperature=0
    )
    long_call = stub.StreamComplete(long_request)
    produced = 0
    async for reply in long_call:
        produced += reply.token_count
        if produced >= 8:
            break
    short = await stub.Complete(pb.CompleteRequest(model=model, prompt="Hi", max_output_tokens=4, temperature=0))
    assert short.usage.output_tokens == 4
    remaining = [reply async for reply in long_call]
    assert remaining[-1].usage.output_tokens == 160
    # The short request joined the running batch and finished while the long one still had tokens to go.
    assert sum(r.token_count for r in remaining[:-1]) > 100


def _long(index: int, tokens: int = 400) -> GenerationRequest:
    return GenerationRequest(
        sampling=SamplingParams(max_output_tokens=tokens, temperature=0.0, min_output_tokens=tokens),
        prompt=PROMPTS[index],
    )


def _start(batcher: ContinuousBatcher, request: GenerationRequest, backend) -> tuple[RequestContext, Future]:
    ctx = RequestContext()
    ids = backend.encode(request)
    return ctx, _POOL.submit(lambda: list(batcher.stream(request, ctx, ids)))


@contextlib.contextmanager
def _own_batcher(backend, **limits) -> Iterator[ContinuousBatcher]:
    """A batcher of its own with these limits on the session's model, closed afterwards."""
    batcher = ContinuousBatcher(backend.engine, BatchLimits(**limits))
    try:
        yield batcher
    finally:
        batcher.close()


def _wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_batcher_bounds_are_enforced(llm):
    server, _stub, _ = llm
    backend = server.model_host.models["smollm2-135m-onnx"].backend
    with _own_batcher(backend, max_batch_size=2, max_waiting=1) as batcher:
        started = [_start(batcher, _long(i), backend) for i in range(2)]
        _wait_until(lambda: batcher.running == 2)
        started.append(_start(batcher, _long(2), backend))  # the batch is full: it waits
        _wait_until(lambda: batcher.waiting == 1)
        with pytest.raises(ResourceExhaustedError) as caught:
            next(batcher.stream(_long(3), RequestContext(), backend.encode(_long(3))))
        assert caught.value.reason == "BATCH_QUEUE_FULL"
        assert batcher.running == 2 and batcher.waiting == 1
        started[0][0].cancelled.set()  # a cancelled sequence frees its slot at the next step
        _wait_until(lambda: batcher.running == 2 and batcher.waiting == 0)
        for ctx, _future in started:
            ctx.cancelled.set()
        for _ctx, future in started:
            assert future.result(timeout=60)[-1].finish_reason is FinishReason.CANCELLED


def test_tokens_in_flight_hold_back_a_sequence_until_one_finishes(llm):
    server, _stub, _ = llm
    backend = server.model_host.models["smollm2-135m-onnx"].backend
    first, second = _long(0, tokens=40), _long(1, tokens=8)
    budget = len(backend.encode(first)) + 40 + 4  # room for the first only
    with _own_batcher(backend, max_tokens_in_flight=budget) as batcher:
        _ctx, first_done = _start(batcher, first, backend)
        _wait_until(lambda: batcher.running == 1)
        _ctx, second_done = _start(batcher, second, backend)
        _wait_until(lambda: batcher.waiting == 1)
        assert batcher.running == 1
        assert sum(c.token_count for c in first_done.result(timeout=60)) == 40
        assert sum(c.token_count for c in second_done.result(timeout=60)) == 8
        assert batcher.stats.max_batch_seen == 1


@pytest.mark.parametrize("model", LLM_MODELS)
def test_a_long_prompt_is_prefilled_in_chunks_between_decoding_steps(llm, model):
    server, _stub, _ = llm
    backend = server.model_host.models[model].backend
    story = " ".join(PROMPTS * 3)  # about 130 tokens: 9 chunks of 16
    long_prompt = GenerationRequest(sampling=SamplingParams(max_output_tokens=8, temperature=0.0), prompt=story)
    alone = backend.run(long_prompt, RequestContext())
    with _own_batcher(backend, max_prefill_tokens=16) as batcher:
        _ctx, running = _start(batcher, _long(0, tokens=120), backend)
        _wait_until(lambda: batcher.running == 1)
        steps_before = batcher.stats.steps
        _ctx, chunked = _start(batcher, long_prompt, backend)
        chunks = chunked.result(timeout=120)
        # The running stream kept decoding while the long prompt was prefilled chunk by chunk.
        assert batcher.stats.prefill_chunks >= 8
        assert batcher.stats.steps - steps_before >= batcher.stats.prefill_chunks
        assert [t for c in chunks for t in c.token_ids] == alone.token_ids
        assert sum(c.token_count for c in running.result(timeout=120)) == 120


@pytest.mark.parametrize("model", LLM_MODELS)
def test_a_prompt_the_model_fails_on_does_not_take_the_batch_down(llm, model):
    server, _stub, _ = llm
    backend = server.model_host.models[model].backend
    with _own_batcher(backend, max_prefill_tokens=16) as batcher:
        _ctx, running = _start(batcher, _long(0, tokens=60), backend)
        _wait_until(lambda: batcher.running == 1)
        request = _long(1, tokens=4)
        for bad_ids in ([10**7] * 4, [10**7] * 40):  # a token id outside the vocabulary; short, then chunked
            failing = _POOL.submit(lambda ids=bad_ids: list(batcher.stream(request, RequestContext(), ids)))
            with pytest.raises(Exception):  # noqa: B017 - the model's own error (torch or ONNX Runtime)
                failing.result(timeout=60)
        assert sum(c.token_count for c in running.result(timeout=120)) == 60


async def test_a_full_batch_queue_is_resource_exhausted_through_grpc(registry, store, start_server):
    model = "smollm2-135m-onnx"
    params = {**registry[model].params, "max_batch_size": 1, "max_waiting": 0}
    spec = dataclasses.replace(registry[model], params=params)
    server = build_server(ServerConfig(name="llm"), None, {model: spec}, store=store)
    stub = llm_service_pb2_grpc.LlmServiceStub(await start_server(server))
    first = stub.StreamComplete(
        pb.StreamCompleteRequest(model=model, prompt="Tell a story.", max_output_tokens=200, temperature=0)
    )
    await first.read()  # decoding: the one batch slot is taken
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model=model, prompt="Hi", max_output_tokens=2))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _status, details = status_details(caught.value)
    assert details["ErrorInfo"].reason == "BATCH_QUEUE_FULL" and "RetryInfo" in details
    first.cancel()


async def test_batching_figures_are_exported_to_prometheus(registry, store, start_server):
    model = "smollm2-135m-onnx"
    server = build_server(ServerConfig(name="llm", metrics_port=0), None, {model: registry[model]}, store=store)
    stub = llm_service_pb2_grpc.LlmServiceStub(await start_server(server))
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"

    async def scrape() -> dict[str, float]:
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if model in line}

    # The batcher is the process's one for this model (the session's servers share its engine): count the change.
    before = await scrape()
    reply = await stub.Complete(
        pb.CompleteRequest(model=model, prompt="Hi", max_output_tokens=5, min_output_tokens=5, temperature=0)
    )
    assert reply.usage.output_tokens == 5
    after = await scrape()
    label = f'{{model="{model}"}}'

    def grew(name: str) -> float:
        return after[f"{name}{label}"] - before.get(f"{name}{label}", 0.0)

    assert grew("aisemble_llm_batch_steps_total") == 4  # the first token comes from the prefill
    assert grew("aisemble_llm_batch_tokens_total") == 4
    assert grew("aisemble_llm_time_to_first_token_seconds_count") == 1
    assert 0 < grew("aisemble_llm_time_to_first_token_seconds_sum") < 60
    assert after[f"aisemble_llm_batch_running{label}"] == 0


async def test_bad_batching_params_fail_the_load_and_calls_say_why(registry, store, start_server):
    model = "smollm2-135m-onnx"
    spec = dataclasses.replace(registry[model], params={**registry[model].params, "max_batch_size": 0})
    server = build_server(ServerConfig(name="llm-bad"), None, {model: spec}, store=store)
    stub = llm_service_pb2_grpc.LlmServiceStub(await start_server(server))
    hosted = server.model_host.models[model]
    assert hosted.state.value == "failed" and "params.max_batch_size" in hosted.error
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model=model, prompt="Hi", max_output_tokens=2))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "params.max_batch_size: must be an integer >= 1 (got 0)" in caught.value.details()


async def test_compute_counters_are_reported_and_exported(registry, store, start_server):
    model = "smollm2-135m-onnx"
    server = build_server(ServerConfig(name="llm", metrics_port=0), None, {model: registry[model]}, store=store)
    stub = llm_service_pb2_grpc.LlmServiceStub(await start_server(server))
    await stub.Complete(pb.CompleteRequest(model=model, prompt="Hi", max_output_tokens=3, min_output_tokens=3))
    info = server.model_host.models[model].backend.info()
    assert info["tokens_generated"] == 3 and info["active_sequences"] == 0
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    figures = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if model in line}
    label = f'{{model="{model}"}}'
    assert figures[f"aisemble_llm_generated_tokens_total{label}"] == 3
    assert figures[f"aisemble_llm_active_sequences{label}"] == 0


async def test_concurrent_streams_park_no_thread_each(llm):
    """The decoding thread hands chunks to the event loop: 8 live streams add no thread to the process."""
    import threading

    _server, stub, _ = llm
    model = "smollm2-135m-onnx"
    await stub.Complete(pb.CompleteRequest(model=model, prompt="Hi", max_output_tokens=2, temperature=0))
    before = threading.active_count()
    calls = [
        stub.StreamComplete(pb.StreamCompleteRequest(model=model, prompt=p, max_output_tokens=24, temperature=0))
        for p in PROMPTS
    ]
    firsts = [await call.read() for call in calls]  # all 8 are live now
    during = threading.active_count()

    async def rest(call) -> list[pb.StreamCompleteResponse]:
        replies = []
        while (reply := await call.read()) is not grpc.aio.EOF:
            replies.append(reply)
        return replies

    remaining = [await rest(call) for call in calls]
    ends = [([first, *replies])[-1].finish_reason for first, replies in zip(firsts, remaining, strict=True)]
    assert all(end != pb.FINISH_REASON_UNSPECIFIED for end in ends), (ends, firsts)
    assert during == before, f"{during - before} threads appeared for 8 streams"
