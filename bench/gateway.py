"""Gateway benchmark: the same requests direct to a service and through the gateway, in one run, twice: with
plaintext hops and no key, then with mTLS between gateway and services and a user key on every call.

Added latency per hop (a cheap NLP call, p50), what auth + mTLS add to a call through the gateway, streamed
tokens/s through the gateway vs direct, and the latency of an answer from the gateway's cache."""

from __future__ import annotations

import time

from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.nlp.v1 import nlp_service_pb2, nlp_service_pb2_grpc
from aisemble.rpc.client import blocking_channel
from bench.common import Mesh, median, percentile, print_table

CALLS = 200
TOKENS = 64
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle. Once upon a time,"


def _latencies(call, request, count: int = CALLS, metadata=()) -> list[float]:
    for _ in range(20):
        call(request, timeout=30, metadata=metadata)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call(request, timeout=30, metadata=metadata)
        samples.append(time.perf_counter() - started)
    return samples


def _stream_rate(stub: llm_service_pb2_grpc.LlmServiceStub, model: str, metadata=(), repeats: int = 3) -> float:
    rates = []
    for index in range(repeats + 1):
        request = pb.StreamCompleteRequest(
            model=model, prompt=PROMPT, max_output_tokens=TOKENS, temperature=0.7
        )  # no seed: not cacheable, every call runs the model
        started, tokens = time.perf_counter(), 0
        for reply in stub.StreamComplete(request, timeout=300, metadata=metadata):
            tokens += reply.token_count
        if index:  # the first is a warm-up
            rates.append(tokens / (time.perf_counter() - started))
    return median(rates)


def _measure(secure: bool, llm_model: str) -> dict[str, object]:
    """Direct and through-the-gateway figures of one mesh: plaintext and anonymous, or mTLS and a user key."""
    with Mesh([llm_model, "langid"], ["llm", "nlp"], secure=secure) as mesh:
        channels = {
            name: blocking_channel(mesh.addresses[name], peer=mesh.peer(name)) for name in ("gateway", "llm", "nlp")
        }
        key = mesh.metadata()
        try:
            request = nlp_service_pb2.DetectLanguageRequest(model="langid", texts=["Bonjour tout le monde"])
            direct = _latencies(nlp_service_pb2_grpc.NlpServiceStub(channels["nlp"]).DetectLanguage, request)
            gateway_stub = nlp_service_pb2_grpc.NlpServiceStub(channels["gateway"])
            # Distinct texts: the cache must not answer these.
            texts = iter(f"Bonjour tout le monde {i}" for i in range(10 * CALLS))
            via = []
            for _ in range(20 + CALLS):
                started = time.perf_counter()
                gateway_stub.DetectLanguage(
                    nlp_service_pb2.DetectLanguageRequest(model="langid", texts=[next(texts)]), metadata=key
                )
                via.append(time.perf_counter() - started)
            via = via[20:]
            cached = _latencies(gateway_stub.DetectLanguage, request, metadata=key)
            direct_rate = _stream_rate(llm_service_pb2_grpc.LlmServiceStub(channels["llm"]), llm_model)
            gateway_rate = _stream_rate(llm_service_pb2_grpc.LlmServiceStub(channels["gateway"]), llm_model, key)
        finally:
            for channel in channels.values():
                channel.close()
    return {"direct": direct, "via": via, "cached": cached, "direct_rate": direct_rate, "gateway_rate": gateway_rate}


def main() -> None:
    """Print the table and the ratios against the targets: plaintext and anonymous, then mTLS and a user key."""
    llm_model = "smollm2-135m-onnx"
    runs = {secure: _measure(secure, llm_model) for secure in (False, True)}
    rows = []
    for secure, run in runs.items():
        mode = "mTLS + key" if secure else "plaintext, no key"
        for label, key in (
            ("direct to the nlp service", "direct"),
            ("through the gateway (cache miss)", "via"),
            ("through the gateway (cache hit)", "cached"),
        ):
            samples = run[key]
            rows.append([f"DetectLanguage {label}, {mode}", median(samples) * 1000, percentile(samples, 95) * 1000])  # type: ignore[arg-type]
    print_table(["path", "p50 ms", "p95 ms"], rows)
    print_table(
        ["stream (SmolLM2 ONNX, 64 tokens)", "tokens/s"],
        [
            [f"{where}, {'mTLS + key' if secure else 'plaintext, no key'}", run[key]]
            for secure, run in runs.items()
            for where, key in (("direct to the llm service", "direct_rate"), ("through the gateway", "gateway_rate"))
        ],
    )
    added = {
        secure: (median(run["via"]) - median(run["direct"])) * 1000  # type: ignore[arg-type]
        for secure, run in runs.items()
    }
    off, on = runs[False], runs[True]
    print(f"added latency per hop, p50, plaintext and no key: {added[False]:.2f} ms (target <= 1 ms)")
    print(f"added latency per hop, p50, mTLS and a user key: {added[True]:.2f} ms (target <= 1 ms)")
    security_cost = (median(on["via"]) - median(off["via"])) * 1000  # type: ignore[arg-type]
    print(f"through the gateway, p50, auth + mTLS on vs off: {security_cost:+.2f} ms (target <= +0.3 ms)")
    print(
        f"streamed tokens/s through the gateway vs direct: {off['gateway_rate'] / off['direct_rate']:.3f} plaintext, "  # type: ignore[operator]
        f"{on['gateway_rate'] / on['direct_rate']:.3f} mTLS + key (target >= 0.97)"  # type: ignore[operator]
    )
    print(f"cached answer p50: {median(on['cached']) * 1000:.2f} ms with mTLS + key (target <= 1 ms)")  # type: ignore[arg-type]
