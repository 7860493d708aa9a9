"""Gateway benchmark: the same requests direct to a service and through the gateway, in one run.

Added latency per hop (a cheap NLP call, p50), streamed tokens/s through the gateway vs direct,
and the latency of an answer from the gateway's cache."""

from __future__ import annotations

import time

import grpc

from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.nlp.v1 import nlp_service_pb2, nlp_service_pb2_grpc
from bench.common import Mesh, median, percentile, print_table

CALLS = 200
TOKENS = 64
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle. Once upon a time,"


def _latencies(call, request, count: int = CALLS) -> list[float]:
    for _ in range(20):
        call(request, timeout=30)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call(request, timeout=30)
        samples.append(time.perf_counter() - started)
    return samples


def _stream_rate(stub: llm_service_pb2_grpc.LlmServiceStub, model: str, repeats: int = 3) -> float:
    rates = []
    for index in range(repeats + 1):
        request = pb.StreamCompleteRequest(
            model=model, prompt=PROMPT, max_output_tokens=TOKENS, temperature=0.7
        )  # no seed: not cacheable, every call runs the model
        started, tokens = time.perf_counter(), 0
        for reply in stub.StreamComplete(request, timeout=300):
            tokens += reply.token_count
        if index:  # the first is a warm-up
            rates.append(tokens / (time.perf_counter() - started))
    return median(rates)


def main() -> None:
    """Print the table and the ratios against the targets."""
    llm_model = "smollm2-135m-onnx"
    with Mesh([llm_model, "langid"], ["llm", "nlp"]) as mesh:
        channels = {name: grpc.insecure_channel(mesh.addresses[name]) for name in ("gateway", "llm", "nlp")}
        try:
            request = nlp_service_pb2.DetectLanguageRequest(model="langid", texts=["Bonjour tout le monde"])
            direct = _latencies(nlp_service_pb2_grpc.NlpServiceStub(channels["nlp"]).DetectLanguage, request)
            gateway_stub = nlp_service_pb2_grpc.NlpServiceStub(channels["gateway"])
            # Distinct texts: the cache must not answer these.
            texts = iter(f"Bonjour tout le monde {i}" for i in range(10 * CALLS))
            via = []
            for _ in range(20 + CALLS):
                started = time.perf_counter()
                gateway_stub.DetectLanguage(nlp_service_pb2.DetectLanguageRequest(model="langid", texts=[next(texts)]))
                via.append(time.perf_counter() - started)
            via = via[20:]
            cached = _latencies(gateway_stub.DetectLanguage, request)
            direct_rate = _stream_rate(llm_service_pb2_grpc.LlmServiceStub(channels["llm"]), llm_model)
            gateway_rate = _stream_rate(llm_service_pb2_grpc.LlmServiceStub(channels["gateway"]), llm_model)
        finally:
            for channel in channels.values():
                channel.close()
    rows = [
        ["DetectLanguage direct to the nlp service", median(direct) * 1000, percentile(direct, 95) * 1000],
        ["DetectLanguage through the gateway (cache miss)", median(via) * 1000, percentile(via, 95) * 1000],
        ["DetectLanguage through the gateway (cache hit)", median(cached) * 1000, percentile(cached, 95) * 1000],
    ]
    print_table(["path", "p50 ms", "p95 ms"], rows)
    print_table(
        ["stream (SmolLM2 ONNX, 64 tokens)", "tokens/s"],
        [["direct to the llm service", direct_rate], ["through the gateway", gateway_rate]],
    )
    print(f"added latency per hop, p50: {(median(via) - median(direct)) * 1000:.2f} ms (target <= 1 ms)")
    print(f"streamed tokens/s through the gateway vs direct: {gateway_rate / direct_rate:.3f} (target >= 0.97)")
    print(f"cached answer p50: {median(cached) * 1000:.2f} ms (target <= 1 ms)")
