"""NLP benchmark: bare ONNX Runtime and torch in-process vs Embed through the NLP service, 1 and 32 clients."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from aisemble.nlp.v1 import nlp_service_pb2 as pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.store.model_store import ModelStore, default_store_root
from bench.common import median, percentile, print_table
from entrypoints.launcher import wait_healthy

MODEL = "minilm-l6"
CLIENTS = 32
SECONDS = 2.0  # per throughput measurement
LATENCY_CALLS = 150
ROUNDS = 3
REPO = Path(__file__).resolve().parent.parent
#: Two or three words (3-5 tokens with [CLS]/[SEP]): keywords, tags, short queries.
SHORT_TEXTS = [
    "eating food",
    "eating bread",
    "stock market",
    "a cat",
    "hello world",
    "good morning",
    "fresh coffee",
    "red car",
] * 4
#: English sentences (8-20 tokens), as a search or routing service sees them.
TEXTS = [
    "How do I reset my password?",
    "The stock market fell sharply after the central bank raised interest rates.",
    "A man is playing a guitar on the street corner.",
    "What is the capital of Australia?",
    "The patient shows symptoms of fever and a persistent cough.",
    "Our quarterly revenue grew by twelve percent year over year.",
    "Please cancel my subscription and refund the last payment.",
    "The court ruled that the contract was void.",
    "Best hiking trails near the lake for beginners",
    "The new phone has a faster processor and a better camera.",
    "Can I bring my dog on the train?",
    "The recipe needs two eggs, flour, sugar and a pinch of salt.",
    "Scientists discovered a new species of frog in the rainforest.",
    "My order arrived damaged, what should I do?",
    "The football match was postponed because of heavy rain.",
    "Learn Python in ten minutes a day",
    "The museum is closed on Mondays and public holidays.",
    "Solar panels convert sunlight into electricity.",
    "The defendant pleaded not guilty to all charges.",
    "Where can I find the nearest pharmacy?",
    "She finished the marathon in under four hours.",
    "The meeting has been moved to Thursday afternoon.",
    "Interest rates on savings accounts remain low.",
    "How long should I boil an egg?",
    "The airline lost my luggage on the way to Tokyo.",
    "Vaccines train the immune system to recognise a virus.",
    "The band announced a world tour starting in March.",
    "What are the side effects of ibuprofen?",
    "The city plans to build a new bridge across the river.",
    "Remote work has changed how teams communicate.",
    "The printer on the third floor is out of paper.",
    "Two cups of coffee a day are fine for most adults.",
]
WORKLOADS = {"short texts (2-3 words)": SHORT_TEXTS, "sentences (8-20 tokens)": TEXTS}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _latency_ms(call: Callable[[int], object], calls: int = LATENCY_CALLS) -> float:
    """Median latency of call(i) in ms, after a warm-up."""
    for i in range(20):
        call(i)
    times = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    return median(times) * 1000


def _rate(call: Callable[[], object], texts_per_call: int, seconds: float = SECONDS) -> float:
    """Texts per second of back-to-back calls, after a warm-up."""
    for _ in range(3):
        call()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        done += texts_per_call
    return done / (time.perf_counter() - started)


class BareOnnx:
    """ONNX Runtime alone, in-process: tokenize, run, mean-pool, normalise (what the service does, minus gRPC)."""

    def __init__(self, store: ModelStore) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = store.require(MODEL)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def embed(self, batch: list[str]) -> np.ndarray:
        """Unit vectors for a batch."""
        encodings = self.tokenizer.encode_batch(batch)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": mask,
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        hidden = self.session.run(["last_hidden_state"], feed)[0]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def latency_ms(self, texts: list[str]) -> float:
        """Median ms of batch 1."""
        return _latency_ms(lambda i: self.embed([texts[i % len(texts)]]))

    def rate(self, texts: list[str]) -> float:
        """Texts/s of the whole list as one batch."""
        return _rate(lambda: self.embed(texts), len(texts))


def bare_torch(store: ModelStore, texts: list[str]) -> tuple[float, float]:
    """The same model in torch eager mode (transformers), in-process. (batch-1 ms, batch-32 texts/s)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = store.require(MODEL) / "hf"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()

    def embed(batch: list[str]) -> Any:
        inputs = tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)

    one = _latency_ms(lambda i: embed([texts[i % len(texts)]]), calls=LATENCY_CALLS // 2)
    many = _rate(lambda: embed(texts), len(texts))
    return one, many


def service_one_client(address: str, texts: list[str]) -> float:
    """Embed with one text per call, one call at a time: median ms."""
    with grpc.insecure_channel(address) as channel:
        stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
        return _latency_ms(lambda i: stub.Embed(pb.EmbedRequest(model=MODEL, texts=[texts[i % len(texts)]])))


async def service_clients(address: str, texts: list[str], clients: int, seconds: float) -> tuple[float, float]:
    """`clients` concurrent callers, each sending one text per call back to back: (texts/s, p50 ms)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
        latencies: list[float] = []
        stop_at = 0.0

        async def client(index: int, measure: bool) -> int:
            done = 0
            i = index
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                await stub.Embed(pb.EmbedRequest(model=MODEL, texts=[texts[i % len(texts)]]))
                if measure:
                    latencies.append(time.perf_counter() - started)
                done += 1
                i += clients
            return done

        stop_at = time.perf_counter() + 0.5  # warm-up
        await asyncio.gather(*(client(i, False) for i in range(clients)))
        started = time.perf_counter()
        stop_at = started + seconds
        counts = await asyncio.gather(*(client(i, True) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return sum(counts) / elapsed, percentile(latencies, 50) * 1000


def serve(port: int) -> None:
    """Child process: the NLP service hosting MiniLM-L6 as the registry sets it; batch stats on stdout at exit."""
    from aisemble.config.models import load_models
    from aisemble.rpc.server import ServerConfig
    from services.nlp.app import build_server

    models = {MODEL: load_models()[MODEL]}
    server = build_server(ServerConfig(name="nlp", address=f"127.0.0.1:{port}"), None, models)
    runner = server.bindings[0].servicer.runner  # type: ignore[attr-defined]
    batcher = runner.batcher(MODEL)
    asyncio.run(server.serve_forever())
    stats = batcher.stats
    sizes = {str(k): v for k, v in sorted(stats.sizes.items())}
    sys.stdout.write(json.dumps({"calls": stats.calls, "items": stats.items, "sizes": sizes}) + "\n")


def _report(name: str, texts: list[str], bare: dict[str, float], served: dict[str, float]) -> None:
    n = len(texts)
    one, rate = served["one_ms"], served["rate"]
    print(f"\n{name}: {n} texts; latency is the median, throughput over {SECONDS:.0f} s of back-to-back calls")
    print_table(
        ["path", "latency ms", "texts/s"],
        [
            ["bare ONNX Runtime, batch 1", bare["ort_one"], 1000 / bare["ort_one"]],
            [f"bare ONNX Runtime, batch {n}", n * 1000 / bare["ort_many"], bare["ort_many"]],
            ["torch eager, batch 1", bare["torch_one"], 1000 / bare["torch_one"]],
            [f"torch eager, batch {n}", n * 1000 / bare["torch_many"], bare["torch_many"]],
            ["service over gRPC, 1 client, 1 text per call", one, 1000 / one],
            [f"service over gRPC, {CLIENTS} clients, 1 text per call (p50)", served["p50_ms"], rate],
        ],
    )
    bare_one_rate = 1000 / bare["ort_one"]
    checks = [
        (
            "service batch-1 latency - bare batch-1",
            f"{one - bare['ort_one']:+.2f} ms",
            "<= +1.5 ms",
            one - bare["ort_one"] <= 1.5,
        ),
        (
            f"service {CLIENTS} clients / bare batch-1 rate",
            f"{rate / bare_one_rate:.2f}x",
            ">= 2x",
            rate / bare_one_rate >= 2,
        ),
        (
            f"service {CLIENTS} clients / bare batch-{n} rate",
            f"{rate / bare['ort_many']:.0%}",
            ">= 60%",
            rate / bare["ort_many"] >= 0.6,
        ),
        (f"bare batch-{n} rate / bare batch-1 rate", f"{bare['ort_many'] / bare_one_rate:.2f}x", "", True),
        ("ONNX Runtime vs torch, batch 1 latency", f"{bare['torch_one'] / bare['ort_one']:.2f}x faster", "", True),
        (f"ONNX Runtime vs torch, batch {n} rate", f"{bare['ort_many'] / bare['torch_many']:.2f}x faster", "", True),
    ]
    print_table(
        ["ratio", "measured", "target", "met"],
        [[label, value, target, ("yes" if ok else "NO") if target else "-"] for label, value, target, ok in checks],
    )


def main() -> None:
    """Print, per workload, the table and the ratios against the targets.

    Bare and service measurements alternate, ROUNDS times, and each figure is the best of its rounds:
    on a shared machine that keeps a burst of someone else's work out of one side of a ratio.
    """
    store = ModelStore(default_store_root())
    print(
        f"all-MiniLM-L6-v2 (fp32 ONNX), Embed with one text per call; {os.cpu_count()} CPU cores; "
        f"best of {ROUNDS} alternating rounds; load average before: {os.getloadavg()[0]:.2f} (should be ~0)"
    )
    port = _free_port()
    address = f"127.0.0.1:{port}"
    service = subprocess.Popen(
        [sys.executable, "-m", "bench.nlp", "--serve", str(port)],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    bare: dict[str, dict[str, float]] = {}
    served: dict[str, dict[str, float]] = {}
    try:
        if not wait_healthy(address, timeout_s=120):
            raise RuntimeError("the NLP service did not become healthy")
        for name, texts in WORKLOADS.items():
            onnx = BareOnnx(store)
            rounds: list[dict[str, float]] = []
            for _ in range(ROUNDS):
                one = onnx.latency_ms(texts)
                service_one = service_one_client(address, texts)
                many = onnx.rate(texts)
                rate, p50 = asyncio.run(service_clients(address, texts, CLIENTS, SECONDS))
                rounds.append({"ort_one": one, "one_ms": service_one, "ort_many": many, "rate": rate, "p50_ms": p50})
            best = {key: (min if key.endswith(("_one", "_ms")) else max)(r[key] for r in rounds) for key in rounds[0]}
            torch_one, torch_many = bare_torch(store, texts)
            bare[name] = {"ort_one": best["ort_one"], "ort_many": best["ort_many"], "torch_one": torch_one}
            bare[name]["torch_many"] = torch_many
            served[name] = {"one_ms": best["one_ms"], "rate": best["rate"], "p50_ms": best["p50_ms"]}
    finally:
        service.terminate()
        out, _ = service.communicate(timeout=30)
    for name, texts in WORKLOADS.items():
        _report(name, texts, bare[name], served[name])
    stats = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    if stats.get("calls"):
        print(
            f"\nservice batches (both workloads): {stats['calls']} ONNX Runtime calls, "
            f"{stats['items'] / stats['calls']:.1f} texts per call on average; calls by size {stats['sizes']}"
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        main()
