"""Continuous batching benchmark, per backend (transformers, ONNX Runtime): 1, 8 and 16 concurrent streams
through the gateway vs the bare model at batch 1 and batch 8, with time to first token under load."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.store.model_store import ModelStore, default_store_root
from bench.common import Mesh, median, percentile, print_table

TOKENS = 64
ROUNDS = 3  # every figure is the median of this many rounds (first tokens: pooled over them)
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


def _chat_texts(tokenizer: Any, size: int) -> list[str]:
    """The first `size` prompts as user turns in the model's chat template (what the service sends it)."""
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in PROMPTS[:size]
    ]


BareRun = Callable[[int], None]  # runs the bare model on the first n prompts: TOKENS tokens each


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def bare_transformers(store: ModelStore) -> tuple[BareRun, BareRun]:
    """transformers generate() on n prompts (left padding), and its prefill alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = store.require("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    pad = tokenizer.pad_token_id or 0

    def batch(size: int) -> Any:
        return tokenizer(_chat_texts(tokenizer, size), return_tensors="pt", padding=True, add_special_tokens=False)

    @torch.inference_mode()
    def generate(size: int) -> None:
        model.generate(**batch(size), max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False, pad_token_id=pad)

    @torch.inference_mode()
    def prefill(size: int) -> None:
        model(**batch(size), use_cache=True, logits_to_keep=1)

    return generate, prefill


def bare_onnx(store: ModelStore) -> tuple[BareRun, BareRun]:
    """The exported graph on ONNX Runtime in a plain greedy loop (left-padded prefill, then one token a
    step with past key/values) on n prompts, and its prefill alone."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from aisemble.store.causal_lm_graph import KV_INPUT_NAMES, ONNX_FILE

    path = store.require("smollm2-135m-instruct-onnx")
    config = json.loads((path / "config.json").read_text())
    layers, heads = int(config["num_hidden_layers"]), int(config["num_key_value_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")  # the faster setting, as the service
    session = ort.InferenceSession(str(path / ONNX_FILE), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")

    def run(size: int, steps: int) -> None:
        encoded = tokenizer(_chat_texts(tokenizer, size), return_tensors="np", padding=True, add_special_tokens=False)
        mask = encoded["attention_mask"].astype(np.int64)
        feeds = {
            "input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": mask,
            "position_ids": np.maximum(mask.cumsum(axis=1) - 1, 0),
        }
        empty = np.zeros((size, heads, 0, head_dim), dtype=np.float32)
        feeds.update((name, empty) for name in KV_INPUT_NAMES(layers))
        for _ in range(steps):
            result = session.run(outputs, feeds)
            tokens = result[0][:, -1].argmax(axis=-1)
            positions = feeds["position_ids"][:, -1:] + 1
            mask = np.concatenate([mask, np.ones((size, 1), dtype=np.int64)], axis=1)
            feeds = {"input_ids": tokens[:, None], "attention_mask": mask, "position_ids": positions}
            feeds.update(zip(KV_INPUT_NAMES(layers), result[1:], strict=True))

    return (lambda size: run(size, TOKENS)), (lambda size: run(size, 1))


@dataclass
class Load:
    """What one round of concurrent streams measured."""

    tokens_per_s: float
    first_tokens: list[float]  # seconds, one per stream
    probe_first_token: float | None = None  # a request arriving while the streams decode


def _request(model: str, index: int, tokens: int = TOKENS) -> pb.StreamChatRequest:
    return pb.StreamChatRequest(
        model=model,
        messages=[pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=PROMPTS[index % len(PROMPTS)])],
        max_output_tokens=tokens,
        min_output_tokens=tokens,  # exactly this many, like the bare loops
        temperature=0.7,  # no seed: a seeded request is deterministic and the gateway would cache it
    )


async def streams(stub: llm_service_pb2_grpc.LlmServiceStub, model: str, count: int, probe: bool = False) -> Load:
    """count concurrent StreamChat calls; with probe, one more short request sent while they all decode."""
    decoding = asyncio.Event()
    started_streams = 0

    async def one(index: int, tokens: int = TOKENS) -> tuple[int, float]:
        nonlocal started_streams
        started = time.perf_counter()
        first, generated = None, 0
        async for reply in stub.StreamChat(_request(model, index, tokens), timeout=600):
            if first is None and reply.text:
                first = time.perf_counter() - started
                started_streams += 1
                if started_streams == count:
                    decoding.set()
            generated += reply.token_count
        return generated, first or 0.0

    async def probe_once() -> float:
        await decoding.wait()
        await asyncio.sleep(0.5)  # well inside the decoding of the others
        return (await one(0, tokens=4))[1]

    started = time.perf_counter()
    probing = asyncio.ensure_future(probe_once()) if probe else None
    results = await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    probe_first = await probing if probing is not None else None
    return Load(sum(t for t, _ in results) / elapsed, [f for _, f in results], probe_first)


@dataclass
class Figures:
    """Medians over ROUNDS interleaved rounds (bare, then ours, at each size), so that drift of these
    shared cores touches both sides alike; first tokens are pooled over the rounds."""

    bare_1: float  # bare aggregate tokens/s
    bare_8: float
    prefill_1: float  # bare prefill seconds
    prefill_8: float
    alone: Load
    load_8: Load
    load_16: Load


async def _measure(target: str, model: str, generate: BareRun, prefill: BareRun) -> Figures:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = llm_service_pb2_grpc.LlmServiceStub(channel)
        await streams(stub, model, 1)  # warm-up (and the connection)
        generate(1)
        generate(8)
        bare: dict[int, list[float]] = {1: [], 8: []}
        ours: dict[int, list[Load]] = {1: [], 8: []}
        for _ in range(ROUNDS):
            for size in (1, 8):
                bare[size].append(size * TOKENS / _timed(lambda size=size: generate(size)))
                ours[size].append(await streams(stub, model, size, probe=size == 8))
        load_16 = await streams(stub, model, 16)
    prefills = {size: median([_timed(lambda size=size: prefill(size)) for _ in range(ROUNDS)]) for size in (1, 8)}

    def pooled(loads: list[Load]) -> Load:
        probes = [load.probe_first_token for load in loads if load.probe_first_token is not None]
        return Load(
            median([load.tokens_per_s for load in loads]),
            [first for load in loads for first in load.first_tokens],
            median(probes) if probes else None,
        )

    return Figures(
        median(bare[1]), median(bare[8]), prefills[1], prefills[8], pooled(ours[1]), pooled(ours[8]), load_16
    )


def run_backend(label: str, model: str, bare: Callable[[ModelStore], tuple[BareRun, BareRun]]) -> None:
    """One backend: the bare model in this process, the mesh in its own; table and ratios."""
    generate, prefill = bare(ModelStore(default_store_root()))
    with Mesh([model], ["llm"]) as mesh:
        figures = asyncio.run(_measure(mesh.addresses["gateway"], model, generate, prefill))
    alone, load_8, load_16 = figures.alone, figures.load_8, figures.load_16
    idle = median(alone.first_tokens)
    rows: list[list[object]] = [
        ["bare, batch 1", figures.bare_1, figures.prefill_1 * 1000, ""],
        ["bare, batch 8", figures.bare_8, figures.prefill_8 * 1000, ""],
        ["gateway, 1 stream", alone.tokens_per_s, idle * 1000, percentile(alone.first_tokens, 95) * 1000],
        [
            "gateway, 8 concurrent streams",
            load_8.tokens_per_s,
            median(load_8.first_tokens) * 1000,
            percentile(load_8.first_tokens, 95) * 1000,
        ],
        ["gateway, 1 request arriving into the 8", "", (load_8.probe_first_token or 0.0) * 1000, ""],
        [
            "gateway, 16 concurrent streams",
            load_16.tokens_per_s,
            median(load_16.first_tokens) * 1000,
            percentile(load_16.first_tokens, 95) * 1000,
        ],
    ]
    print(
        f"\nSmolLM2-135M-Instruct, {label}: chat prompts, {TOKENS} tokens per stream "
        "(sampled at temperature 0.7; the bare loops greedy)"
    )
    print_table(["path", "aggregate tokens/s", "first token p50 ms (bare: prefill)", "first token p95 ms"], rows)
    scaling, bare_scaling = load_8.tokens_per_s / alone.tokens_per_s, figures.bare_8 / figures.bare_1
    print(f"8 streams vs 1 stream: {scaling:.2f}x (target >= 4x; the bare model's own: {bare_scaling:.2f}x)")
    print(f"8 streams vs bare batch 8: {load_8.tokens_per_s / figures.bare_8:.2f} (target >= 0.80)")
    print(
        f"time to first token vs idle: {(load_8.probe_first_token or 0.0) / idle:.2f}x for one request arriving "
        f"into 8 decoding streams (target <= 3x); {median(load_8.first_tokens) / idle:.2f}x for 8 arriving "
        f"together, whose floor is the bare prefill of 8 prompts vs 1: {figures.prefill_8 / figures.prefill_1:.2f}x"
    )


def main() -> None:
    """Both local backends, one after the other."""
    run_backend("transformers backend (bare: generate())", "smollm2-135m", bare_transformers)
    run_backend("ONNX Runtime backend (bare: the exported graph in a plain loop)", "smollm2-135m-onnx", bare_onnx)
