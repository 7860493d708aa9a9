"""Continuous batching on the real SmolLM2: a sequence's output in a batch is exactly its output alone."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from aisemble.backend import RequestContext
from aisemble.llm.v1 import llm_service_pb2 as pb
from services.llm.types import ChatTurn, GenerationRequest, SamplingParams
from tests.integration.conftest import LLM_MODELS

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


@pytest.mark.parametrize("model", LLM_MODELS)
@pytest.mark.parametrize("seeded", [False, True], ids=["greedy", "seeded"])
def test_batch_of_8_equals_each_alone(llm, model, seeded):
    server, _stub, _ = llm
    backend = server.model_host.models[model].backend
    assert backend.batcher is not None
    requests = _requests(seeded)
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
