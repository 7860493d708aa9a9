"""Gateway benchmark: the same requests direct to a service and through the gateway, on two meshes side by side:
plaintext hops and no key, and mTLS between gateway and services with a user key on every call (alternating).

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
STREAMS = 5
TOKENS = 64
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle. Once upon a time,"


def _timed(call, request, metadata=()) -> float:
    started = time.perf_counter()
    call(request, timeout=30, metadata=metadata)
    return time.perf_counter() - started


def _stream_rate(stub: llm_service_pb2_grpc.LlmServiceStub, model: str, metadata=()) -> float:
    request = pb.StreamCompleteRequest(
        model=model, prompt=PROMPT, max_output_tokens=TOKENS, temperature=0.7
    )  # no seed: not cacheable, every call runs the model
    started, tokens = time.perf_counter(), 0
    for reply in stub.StreamComplete(request, timeout=300, metadata=metadata):
        tokens += reply.token_count
    return tokens / (time.perf_counter() - started)


class _Paths:
    """The four paths of one mesh: direct and through the gateway, a cache miss, a cache hit, and streams."""

    def __init__(self, mesh: Mesh, label: str) -> None:
        self.label = label
        self.channels = {
            name: blocking_channel(mesh.addresses[name], peer=mesh.peer(name)) for name in ("gateway", "llm", "nlp")
        }
        self.key = mesh.metadata()
        self.direct_nlp = nlp_service_pb2_grpc.NlpServiceStub(self.channels["nlp"]).DetectLanguage
        self.gateway_nlp = nlp_service_pb2_grpc.NlpServiceStub(self.channels["gateway"]).DetectLanguage
        self.direct_llm = llm_service_pb2_grpc.LlmServiceStub(self.channels["llm"])
        self.gateway_llm = llm_service_pb2_grpc.LlmServiceStub(self.channels["gateway"])
        self.samples: dict[str, list[float]] = {"direct": [], "via": [], "cached": [], "rate": [], "rate_via": []}
        self._texts = iter(f"Bonjour tout le monde {i}" for i in range(100 * CALLS))  # distinct: cache misses

    def round(self, count: int, record: bool = True) -> None:
        request = nlp_service_pb2.DetectLanguageRequest(model="langid", texts=["Bonjour tout le monde"])
        for _ in range(count):
            direct = _timed(self.direct_nlp, request)
            miss = nlp_service_pb2.DetectLanguageRequest(model="langid", texts=[next(self._texts)])
            via = _timed(self.gateway_nlp, miss, self.key)
            cached = _timed(self.gateway_nlp, request, self.key)
            if record:
                self.samples["direct"].append(direct)
                self.samples["via"].append(via)
                self.samples["cached"].append(cached)

    def stream_round(self, model: str) -> None:
        self.samples["rate"].append(_stream_rate(self.direct_llm, model))
        self.samples["rate_via"].append(_stream_rate(self.gateway_llm, model, self.key))

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def main() -> None:
    """Both meshes run side by side; their calls alternate in rounds, so both see the same machine."""
    llm_model = "smollm2-135m-onnx"
    with (
        Mesh([llm_model, "langid"], ["llm", "nlp"], secure=False) as plain,
        Mesh([llm_model, "langid"], ["llm", "nlp"], secure=True) as secure,
    ):
        paths = [_Paths(plain, "plaintext, no key"), _Paths(secure, "mTLS + key")]
        try:
            for each in paths:
                each.round(20, record=False)  # warm-up
                each.stream_round(llm_model)
                each.samples["rate"].clear()
                each.samples["rate_via"].clear()
            for _ in range(CALLS // 20):
                for each in paths:
                    each.round(20)
            for _ in range(STREAMS):
                for each in paths:
                    each.stream_round(llm_model)
        finally:
            for each in paths:
                each.close()
    rows = []
    for each in paths:
        for label, key in (
            ("direct to the nlp service", "direct"),
            ("through the gateway (cache miss)", "via"),
            ("through the gateway (cache hit)", "cached"),
        ):
            samples = each.samples[key]
            rows.append(
                [f"DetectLanguage {label}, {each.label}", median(samples) * 1000, percentile(samples, 95) * 1000]
            )
    print_table(["path", "p50 ms", "p95 ms"], rows)
    print_table(
        ["stream (SmolLM2 ONNX, 64 tokens)", "tokens/s"],
        [
            [f"{where}, {each.label}", median(each.samples[key])]
            for each in paths
            for where, key in (("direct to the llm service", "rate"), ("through the gateway", "rate_via"))
        ],
    )
    off, on = (each.samples for each in paths)
    added = [(median(s["via"]) - median(s["direct"])) * 1000 for s in (off, on)]
    print(f"added latency per hop, p50, plaintext and no key: {added[0]:.2f} ms (target <= 1 ms)")
    print(f"added latency per hop, p50, mTLS and a user key: {added[1]:.2f} ms (target <= 1 ms)")
    security_cost = (median(on["via"]) - median(off["via"])) * 1000
    print(f"through the gateway, p50, auth + mTLS on vs off: {security_cost:+.2f} ms (target <= +0.3 ms)")
    ratios = [median(s["rate_via"]) / median(s["rate"]) for s in (off, on)]
    print(
        f"streamed tokens/s through the gateway vs direct: {ratios[0]:.3f} plaintext, {ratios[1]:.3f} mTLS + key "
        "(target >= 0.97)"
    )
    print(f"cached answer p50: {median(on['cached']) * 1000:.2f} ms with mTLS + key (target <= 1 ms)")
