"""Continuous batching benchmark: 1, 8 and 16 concurrent streams through the gateway vs the bare model's
generate() at batch 1 and batch 8, with time to first token under load."""

from __future__ import annotations

import asyncio
import time

import grpc

from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.store import ModelStore, default_store_root
from bench.common import Mesh, median, percentile, print_table

TOKENS = 64
PROMPTS = [
    "Write a story about a robot who learns to paint.",
    "Describe a walk through a forest in autumn.",
    "Explain how a steam engine works.",
    "Tell me about the history of the bicycle.",
    "Write a letter to a friend about a trip to the sea.",
    "Describe the life of a honey bee.",
    "Explain why the seasons change.",
    "Write a story about a lighthouse keeper.",
]


def bare(store: ModelStore) -> tuple[float, float]:
    """transformers generate(): aggregate tokens/s at batch 1 and at batch 8 (left padding), TOKENS each."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = store.require("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rates = {}
    for size in (1, 8):
        batch = tokenizer(PROMPTS[:size], return_tensors="pt", padding=True)
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=2, do_sample=False)
            started = time.perf_counter()
            model.generate(
                **batch,
                max_new_tokens=TOKENS,
                min_new_tokens=TOKENS,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or 0,
            )
            rates[size] = size * TOKENS / (time.perf_counter() - started)
    return rates[1], rates[8]


async def streams(target: str, model: str, count: int) -> tuple[float, list[float]]:
    """count concurrent StreamComplete calls: (aggregate tokens/s, time to first token of each)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = llm_service_pb2_grpc.LlmServiceStub(channel)

        async def one(index: int) -> tuple[int, float]:
            started = time.perf_counter()
            first, tokens = None, 0
            request = pb.StreamCompleteRequest(
                model=model,
                prompt=PROMPTS[index % len(PROMPTS)],
                max_output_tokens=TOKENS,
                temperature=0.7,  # no seed: a seeded request is deterministic and the gateway would cache it
            )
            async for reply in stub.StreamComplete(request, timeout=600):
                if first is None and reply.text:
                    first = time.perf_counter() - started
                tokens += reply.token_count
            return tokens, first or 0.0

        await one(0)  # warm-up
        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - started
    return sum(t for t, _ in results) / elapsed, [f for _, f in results]


def main() -> None:
    """Print the table and the ratios against the targets."""
    store = ModelStore(default_store_root())
    bare_1, bare_8 = bare(store)
    model = "smollm2-135m"
    with Mesh([model], ["llm"]) as mesh:
        target = mesh.addresses["gateway"]
        alone_rate, alone_first = asyncio.run(streams(target, model, 1))
        rate_8, first_8 = asyncio.run(streams(target, model, 8))
        rate_16, first_16 = asyncio.run(streams(target, model, 16))
    idle = alone_first[0]
    rows = [
        ["bare generate(), batch 1", bare_1, "", ""],
        ["bare generate(), batch 8", bare_8, "", ""],
        ["gateway, 1 stream", alone_rate, idle * 1000, ""],
        ["gateway, 8 concurrent streams", rate_8, median(first_8) * 1000, percentile(first_8, 95) * 1000],
        ["gateway, 16 concurrent streams", rate_16, median(first_16) * 1000, percentile(first_16, 95) * 1000],
    ]
    print(f"SmolLM2-135M (transformers backend), {TOKENS} tokens per stream, sampled (temperature 0.7)")
    print_table(["path", "aggregate tokens/s", "first token p50 ms", "first token p95 ms"], rows)
    print(f"8 streams vs 1 stream: {rate_8 / alone_rate:.2f}x (target >= 4x)")
    print(f"8 streams vs bare batch 8: {rate_8 / bare_8:.2f} (target >= 0.80)")
    print(f"time to first token, 8-stream load vs idle: {median(first_8) / idle:.2f}x (target <= 3x)")
