"""LLM benchmark: the bare model (generate(), our graph in a plain loop, onnxruntime-genai) beside the same work
through the LLM service, in one run, and the engine's own figures: RSS per LoRA adapter, a batch mixing the base
and two adapters, a chat's second turn with and without prefix reuse."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from aisemble.config.models import load_models
from aisemble.hosting.backend import RequestContext, create_backend
from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.store.model_store import ModelStore, default_store_root
from bench.common import Mesh, median, print_table, timed_in_threads
from services.llm.types import ChatTurn, GenerationRequest, SamplingParams

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle. Once upon a time,"
TOKENS = 64
REPEATS = 3
HF, ONNX = "smollm2-135m", "smollm2-135m-onnx"
BASE_ARTIFACT = "smollm2-135m-instruct"


def bare_generate(store: ModelStore) -> Callable[[], tuple[float, float]]:
    """transformers' own generate(), greedy: a function returning (tokens/s for TOKENS tokens, first token s)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = store.require(BASE_ARTIFACT)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = tokenizer(PROMPT, return_tensors="pt")

    def run() -> tuple[float, float]:
        with torch.inference_mode():
            started = time.perf_counter()
            model.generate(**ids, max_new_tokens=1, do_sample=False)
            first = time.perf_counter() - started
            started = time.perf_counter()
            out = model.generate(**ids, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False)
            rate = (out.shape[1] - ids["input_ids"].shape[1]) / (time.perf_counter() - started)
        return rate, first

    return run


def through_service(stub: llm_service_pb2_grpc.LlmServiceStub, model: str) -> tuple[float, float]:
    """One StreamComplete over gRPC to the LLM service process: (tokens/s, time to first token in s)."""
    request = pb.StreamCompleteRequest(
        model=model, prompt=PROMPT, max_output_tokens=TOKENS, min_output_tokens=TOKENS, temperature=0.0
    )
    started = time.perf_counter()
    first = None
    tokens = 0
    for reply in stub.StreamComplete(request, timeout=120):
        if first is None and reply.text:
            first = time.perf_counter() - started
        tokens += reply.token_count
    return tokens / (time.perf_counter() - started), first or 0.0


def single_streams(store: ModelStore) -> dict[str, Any]:
    """Rounds of: generate(), the transformers entry through the service, our graph's bare loop spinning on and
    off, the ONNX entry through the service; then 8 concurrent streams of the ONNX entry."""
    from bench.batching import streams
    from bench.peers import bare_onnx_loop

    generate = bare_generate(store)
    loops = {spinning: bare_onnx_loop(spinning, TOKENS) for spinning in (True, False)}
    figures: dict[str, list[Any]] = {"generate": [], HF: [], ONNX: [], "loop on": [], "loop off": [], "8": []}
    with Mesh([HF, ONNX], ["llm"], gateway=False) as mesh:
        with grpc.insecure_channel(mesh.addresses["llm"]) as channel:
            stub = llm_service_pb2_grpc.LlmServiceStub(channel)
            generate(), through_service(stub, HF), through_service(stub, ONNX)  # warm-up
            loops[True](), loops[False]()
            for _ in range(REPEATS):
                figures["generate"].append(generate())
                figures[HF].append(through_service(stub, HF))
                figures["loop on"].append(loops[True]())
                figures["loop off"].append(loops[False]())
                figures[ONNX].append(through_service(stub, ONNX))

        async def eight() -> list[float]:
            async with grpc.aio.insecure_channel(mesh.addresses["llm"]) as aio_channel:
                aio_stub = llm_service_pb2_grpc.LlmServiceStub(aio_channel)
                await streams(aio_stub, ONNX, 8)  # warm-up
                return [(await streams(aio_stub, ONNX, 8)).tokens_per_s for _ in range(REPEATS)]

        figures["8"] = asyncio.run(eight())
    return figures


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _adapter(store: ModelStore, folder: Path, seed: int) -> Path:
    """A LoRA adapter shaped as our fine-tuning makes them (rank 8, alpha 16, the attention projections), with
    random matrices (a trained one has the same size)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from services.finetune.trainers.causal_lm import LORA_TARGETS

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(store.require(BASE_ARTIFACT), dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=list(LORA_TARGETS), init_lora_weights=False, task_type="CAUSAL_LM"
    )
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def _batch_rate(backend: Any, adapters: list[int | None], tokens: int = 32) -> float:
    """Tokens/s of len(adapters) concurrent greedy sequences in the backend's batcher, row i on adapters[i]."""
    batcher = backend.batcher
    request = GenerationRequest(
        sampling=SamplingParams(max_output_tokens=tokens, min_output_tokens=tokens, temperature=0.0), prompt=PROMPT
    )
    ids = backend.encode(request)
    counts = [0] * len(adapters)

    def one(index: int) -> None:
        counts[index] = sum(c.token_count for c in batcher.stream(request, RequestContext(), ids, adapters[index]))

    budget, batcher.prefix_cache.max_bytes = batcher.prefix_cache.max_bytes, 0  # every row prefilled in full
    try:
        return sum(counts) / timed_in_threads(one, len(adapters))
    finally:
        batcher.prefix_cache.max_bytes = budget


def adapters_and_mixed_batches(store: ModelStore) -> dict[str, float]:
    """RSS per LoRA adapter added to a loaded base, and a batch mixing the base and two adapters vs the base."""
    folder = Path(tempfile.mkdtemp(prefix="aisemble-bench-lora-"))
    try:
        sources = [_adapter(store, folder / f"a{i}", seed=i) for i in range(3)]
        backend = create_backend(load_models()[HF], store)
        backend.load()
        engine = backend.engine
        _batch_rate(backend, [None] * 6)  # warm-up
        before = _rss_mb()
        ids = [engine.add_adapter(path) for path in sources]
        per_adapter = (_rss_mb() - before) / len(ids)
        base_rates, mixed_rates = [], []
        for _ in range(REPEATS):
            base_rates.append(_batch_rate(backend, [None] * 6))
            mixed_rates.append(_batch_rate(backend, [None, None, ids[0], ids[0], ids[1], ids[1]]))
        merged_mb = sum(p.numel() * p.element_size() for p in engine.model.parameters()) / 2**20
        backend.cleanup()
        return {
            "per_adapter_mb": per_adapter,
            "merged_copy_mb": merged_mb,
            "base": median(base_rates),
            "mixed": median(mixed_rates),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def prefix_reuse(store: ModelStore, model: str) -> tuple[float, float, int]:
    """A chat's second turn: time to its first token with the first turn's cache reused and without (prefilled
    in full): (with s, without s, prompt tokens of the second turn)."""
    backend = create_backend(load_models()[model], store)
    backend.load()
    batcher = backend.batcher
    system = ChatTurn("system", "You are a careful assistant for a maritime museum. " * 12)
    turn = (system, ChatTurn("user", "Tell me about the history of lighthouses."))
    params = SamplingParams(max_output_tokens=24, temperature=0.0)
    answer = backend.run(GenerationRequest(sampling=params, messages=turn), RequestContext()).text
    second = GenerationRequest(
        sampling=SamplingParams(max_output_tokens=1, temperature=0.0),
        messages=(*turn, ChatTurn("assistant", answer), ChatTurn("user", "Which one is the oldest?")),
    )

    def first_token() -> float:
        started = time.perf_counter()
        next(iter(backend.stream(second, RequestContext())))
        return time.perf_counter() - started

    budget = batcher.prefix_cache.max_bytes
    with_reuse, without = [], []
    for _ in range(REPEATS + 1):
        batcher.prefix_cache.max_bytes = 0
        without.append(first_token())
        batcher.prefix_cache.max_bytes = budget
        backend.run(GenerationRequest(sampling=params, messages=turn), RequestContext())  # the first turn, cached
        with_reuse.append(first_token())
    prompt_tokens = len(backend.encode(second))
    backend.cleanup()
    return median(with_reuse[1:]), median(without[1:]), prompt_tokens


def main() -> None:
    """Print the tables and each ratio with its target."""
    from bench.peers import genai_tokens_per_s

    store = ModelStore(default_store_root())
    print(f"SmolLM2-135M, greedy, {TOKENS} tokens, median of {REPEATS} interleaved rounds; prompt {len(PROMPT)} chars")
    figures = single_streams(store)
    generate = (median([r for r, _ in figures["generate"]]), median([f for _, f in figures["generate"]]))
    hf = (median([r for r, _ in figures[HF]]), median([f for _, f in figures[HF]]))
    onnx = (median([r for r, _ in figures[ONNX]]), median([f for _, f in figures[ONNX]]))
    loop_on, loop_off = median(figures["loop on"]), median(figures["loop off"])
    best_loop = max(loop_on, loop_off)
    eight = median(figures["8"])
    genai = genai_tokens_per_s((1, 8), tokens=TOKENS)
    rows: list[list[object]] = [
        ["transformers generate(), in-process (bare)", generate[0], generate[1] * 1000, "1.00"],
        [f"{HF} through the LLM service", hf[0], hf[1] * 1000, f"{hf[0] / generate[0]:.2f}"],
        ["our graph, plain loop, intra-op spinning on (bare)", loop_on, "", f"{loop_on / best_loop:.2f}"],
        ["our graph, plain loop, spinning off (bare)", loop_off, "", f"{loop_off / best_loop:.2f}"],
        [f"{ONNX} through the LLM service", onnx[0], onnx[1] * 1000, f"{onnx[0] / best_loop:.2f}"],
    ]
    if genai:
        rows.append(["onnxruntime-genai 0.18, batch 1 (peer)", genai[1], "", ""])
        rows.append(["onnxruntime-genai 0.18, batch 8 (peer)", genai[8], "", ""])
    rows.append([f"{ONNX}, 8 concurrent streams through the LLM service", eight, "", ""])
    print_table(["path", "tokens/s", "first token ms", "vs its bare reference"], rows)
    print(f"transformers through the service vs generate(): {hf[0] / generate[0]:.2f} (target >= 0.95)")
    print(f"first token through the service vs generate(): {(hf[1] - generate[1]) * 1000:+.1f} ms (target <= +15)")
    print(f"ONNX through the service vs the best bare loop: {onnx[0] / best_loop:.2f} (target >= 0.90)")
    if genai:
        print(f"ONNX, 8 streams through the service vs genai batch 8: {eight / genai[8]:.2f} (target >= 1.00)")
    else:
        print("onnxruntime-genai is not available here: no peer figure (see bench/peers.py)")

    lora = adapters_and_mixed_batches(store)
    print("\nLoRA adapters on one shared base (rank 8 on q/k/v/o, as our fine-tuning makes them), in-process")
    print_table(
        ["figure", "value"],
        [
            ["RSS per added adapter, MB", lora["per_adapter_mb"]],
            ["a merged copy of the base would be, MB", lora["merged_copy_mb"]],
            ["6 sequences of the base, tokens/s", lora["base"]],
            ["2 base + 2 adapter A + 2 adapter B, tokens/s", lora["mixed"]],
        ],
    )
    print(f"RSS per adapter: {lora['per_adapter_mb']:.1f} MB (target < 50)")
    print(f"mixed batch vs base alone: {lora['mixed'] / lora['base']:.2f} (target >= 0.80)")

    print("\nPrefix reuse: a chat's second turn, time to first token, in-process")
    rows = []
    for model in (HF, ONNX):
        reused, full, prompt_tokens = prefix_reuse(store, model)
        rows.append([model, prompt_tokens, reused * 1000, full * 1000, f"{full / reused:.2f}x"])
    print_table(["model", "prompt tokens", "with reuse ms", "full prefill ms", "speed-up"], rows)
