"""Bulk streaming benchmark: StreamEmbed (one stream) vs unary Embed (1 and 32 texts per call) through the gateway,
vs the bare model at batch 32 in-process, alternating in one run."""

from __future__ import annotations

import os
import time

import grpc

from aisemble.nlp.v1 import nlp_service_pb2 as pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.store.model_store import ModelStore, default_store_root
from bench.common import Mesh, print_table
from bench.nlp import MODEL, TEXTS, BareOnnx

ROUNDS = 3
STREAM_TEXTS = 4096  # per stream measurement
BATCH = 32  # texts per StreamEmbed message and per batched Embed call: the model's max_batch_size
SECONDS = 2.0  # per unary measurement
TARGET = 0.85


_made = 0


def _texts(count: int) -> list[str]:
    """`count` sentences never sent before (the gateway caches Embed answers: a repeated text would not reach the
    model)."""
    global _made
    start, _made = _made, _made + count
    return [f"{TEXTS[i % len(TEXTS)]} ({i})" for i in range(start, start + count)]


def stream_rate(stub: nlp_service_pb2_grpc.NlpServiceStub, metadata: list[tuple[str, str]]) -> float:
    """Texts/s of one StreamEmbed stream of STREAM_TEXTS texts in messages of BATCH."""
    texts = _texts(STREAM_TEXTS)

    def messages():  # type: ignore[no-untyped-def]
        yield pb.StreamEmbedRequest(model=MODEL)
        for start in range(0, len(texts), BATCH):
            yield pb.StreamEmbedRequest(
                items=[pb.TextItem(id=str(start + i), text=t) for i, t in enumerate(texts[start : start + BATCH])]
            )

    started = time.perf_counter()
    answered = sum(len(reply.results) for reply in stub.StreamEmbed(messages(), metadata=metadata, timeout=300))
    seconds = time.perf_counter() - started
    assert answered == len(texts), f"{answered} of {len(texts)} texts answered"
    return answered / seconds


def unary_rate(stub: nlp_service_pb2_grpc.NlpServiceStub, metadata: list[tuple[str, str]], per_call: int) -> float:
    """Texts/s of back-to-back Embed calls from one client, `per_call` texts each."""
    for _ in range(3):
        stub.Embed(pb.EmbedRequest(model=MODEL, texts=_texts(per_call)), metadata=metadata, timeout=30)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < SECONDS:
        stub.Embed(pb.EmbedRequest(model=MODEL, texts=_texts(per_call)), metadata=metadata, timeout=30)
        done += per_call
    return done / (time.perf_counter() - started)


def main() -> None:
    """One mesh (registry, NLP service, gateway: separate processes); bare and served rates alternate per round and
    each figure is the best of its rounds."""
    print(
        f"all-MiniLM-L6-v2 (fp32 ONNX), {len(TEXTS)} English sentences (8-20 tokens) repeated; "
        f"{os.cpu_count()} CPU cores; best of {ROUNDS} alternating rounds; "
        f"load average before: {os.getloadavg()[0]:.2f} (should be ~0)"
    )
    bare = BareOnnx(ModelStore(default_store_root()))
    figures: dict[str, list[float]] = {"bare": [], "stream": [], "unary1": [], "unary32": []}
    with Mesh([MODEL], ["nlp"]) as mesh, grpc.insecure_channel(mesh.addresses["gateway"]) as channel:
        stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
        metadata = mesh.metadata()
        stream_rate(stub, metadata)  # warm-up: the service's first batches, the gateway's channel
        for _ in range(ROUNDS):
            figures["bare"].append(bare.rate(_texts(BATCH)))
            figures["stream"].append(stream_rate(stub, metadata))
            figures["unary32"].append(unary_rate(stub, metadata, BATCH))
            figures["unary1"].append(unary_rate(stub, metadata, 1))
    best = {name: max(values) for name, values in figures.items()}
    print_table(
        ["path", "texts/s", "vs bare batch 32"],
        [
            [f"bare ONNX Runtime in-process, batch {BATCH}", best["bare"], 1.0],
            [
                f"StreamEmbed, one stream of {STREAM_TEXTS} texts ({BATCH} per message), via the gateway",
                best["stream"],
                best["stream"] / best["bare"],
            ],
            [
                f"Embed, {BATCH} texts per call, one client, via the gateway",
                best["unary32"],
                best["unary32"] / best["bare"],
            ],
            ["Embed, 1 text per call, one client, via the gateway", best["unary1"], best["unary1"] / best["bare"]],
        ],
    )
    ratio = best["stream"] / best["bare"]
    print_table(
        ["ratio", "measured", "target", "met"],
        [
            [f"one stream / bare batch {BATCH}", f"{ratio:.2f}", f">= {TARGET}", "yes" if ratio >= TARGET else "NO"],
            ["one stream / Embed 1 text per call", f"{best['stream'] / best['unary1']:.1f}x", "", "-"],
            [f"one stream / Embed {BATCH} per call", f"{best['stream'] / best['unary32']:.2f}x", "", "-"],
        ],
    )


if __name__ == "__main__":
    main()
