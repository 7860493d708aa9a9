"""LLM benchmark: the bare model in-process vs the same request streamed through the LLM service over gRPC."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

from aisemble.config.models import load_models
from aisemble.hosting.backend import RequestContext, create_backend
from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.store.model_store import ModelStore, default_store_root
from bench.common import median, print_table
from entrypoints.launcher import wait_healthy
from services.llm.types import GenerationRequest, SamplingParams

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle. Once upon a time,"
TOKENS = 64
REPEATS = 3
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare_generate(store: ModelStore) -> tuple[float, float]:
    """transformers' own generate(): (tokens/s for TOKENS greedy tokens, time to first token in s)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = store.require("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = tokenizer(PROMPT, return_tensors="pt")
    rates, firsts = [], []
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=4, do_sample=False)  # warm-up
        for _ in range(REPEATS):
            started = time.perf_counter()
            model.generate(**ids, max_new_tokens=1, do_sample=False)
            firsts.append(time.perf_counter() - started)
            started = time.perf_counter()
            out = model.generate(**ids, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False)
            rates.append((out.shape[1] - ids["input_ids"].shape[1]) / (time.perf_counter() - started))
    return median(rates), median(firsts)


def bare_backend(model_name: str, store: ModelStore) -> tuple[float, float]:
    """Our backend's decoding loop called in-process (no gRPC): (tokens/s, time to first token)."""
    backend = create_backend(load_models()[model_name], store)
    backend.load()
    request = GenerationRequest(sampling=SamplingParams(max_output_tokens=TOKENS, temperature=0.0), prompt=PROMPT)
    rates, firsts = [], []
    backend.run(request, RequestContext())  # warm-up
    for _ in range(REPEATS):
        started = time.perf_counter()
        first = None
        tokens = 0
        for chunk in backend.stream(request, RequestContext()):
            if first is None and chunk.text:
                first = time.perf_counter() - started
            tokens += chunk.token_count
        rates.append(tokens / (time.perf_counter() - started))
        firsts.append(first or 0.0)
    backend.cleanup()
    return median(rates), median(firsts)


def through_service(stub: llm_service_pb2_grpc.LlmServiceStub, model_name: str) -> tuple[float, float]:
    """StreamComplete over gRPC to the LLM service process: (tokens/s, time to first token)."""
    request = pb.StreamCompleteRequest(model=model_name, prompt=PROMPT, max_output_tokens=TOKENS, temperature=0.0)
    rates, firsts = [], []
    list(stub.StreamComplete(request, timeout=120))  # warm-up
    for _ in range(REPEATS):
        started = time.perf_counter()
        first = None
        tokens = 0
        for reply in stub.StreamComplete(request, timeout=120):
            if first is None and reply.text:
                first = time.perf_counter() - started
            tokens += reply.token_count
        rates.append(tokens / (time.perf_counter() - started))
        firsts.append(first or 0.0)
    return median(rates), median(firsts)


def main() -> None:
    """Print the table: tokens/s and time to first token, bare vs service, transformers and ONNX."""
    store = ModelStore(default_store_root())
    print(f"SmolLM2-135M, greedy, {TOKENS} tokens, median of {REPEATS}; prompt of {len(PROMPT)} characters")
    bare_hf = bare_generate(store)
    bare_loop = {name: bare_backend(name, store) for name in ("smollm2-135m", "smollm2-135m-onnx")}

    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "entrypoints.cli",
            "serve",
            "llm",
            "--address",
            f"127.0.0.1:{port}",
            "--metrics-port",
            "-1",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_healthy(f"127.0.0.1:{port}", timeout_s=300):
            raise RuntimeError("the LLM service did not become healthy")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = llm_service_pb2_grpc.LlmServiceStub(channel)
            served = {name: through_service(stub, name) for name in bare_loop}
    finally:
        service.terminate()
        service.wait(timeout=30)

    rows = [["transformers generate() in-process", bare_hf[0], bare_hf[1] * 1000, "1.00", "+0.0"]]
    for name, (rate, first) in bare_loop.items():
        rows.append(
            [
                f"{name}: our loop in-process",
                rate,
                first * 1000,
                f"{rate / bare_hf[0]:.2f}",
                f"{(first - bare_hf[1]) * 1000:+.1f}",
            ]
        )
    for name, (rate, first) in served.items():
        reference_rate, reference_first = bare_loop[name] if name.endswith("onnx") else bare_hf
        rows.append(
            [
                f"{name}: LLM service, gRPC stream",
                rate,
                first * 1000,
                f"{rate / reference_rate:.2f}",
                f"{(first - reference_first) * 1000:+.1f}",
            ]
        )
    print_table(["path", "tokens/s", "first token ms", "tokens/s ratio vs bare", "first token vs bare, ms"], rows)
    onnx_speedup = served["smollm2-135m-onnx"][0] / served["smollm2-135m"][0]
    print(f"ONNX backend vs transformers backend through the service: {onnx_speedup:.2f}x tokens/s")
    print("bare reference: transformers rows compare with generate(); the ONNX service row with its in-process loop")
