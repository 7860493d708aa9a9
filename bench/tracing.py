"""Tracing benchmark: what one gateway hop costs with tracing on (every process exporting over OTLP to a local sink)
vs off, on two meshes side by side with their calls alternating. A hop is a cheap NLP call through the gateway
minus the same call direct to the service (p50); the target is at most +0.2 ms for tracing."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from aisemble.nlp.v1 import nlp_service_pb2, nlp_service_pb2_grpc
from aisemble.rpc.client import blocking_channel
from bench.common import Mesh, free_port, median, percentile, print_table
from bench.gateway import _timed

CALLS = 400
ROUND = 20


class _Sink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that counts what it is sent."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(self, request, context):
        with self._lock:
            self.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Hops:
    """DetectLanguage direct to the NLP service and through the gateway (distinct texts: no cache hit)."""

    def __init__(self, mesh: Mesh, label: str) -> None:
        self.label = label
        self.channels = [blocking_channel(mesh.addresses[n], peer=mesh.peer(n)) for n in ("nlp", "gateway")]
        self.direct, self.via = (nlp_service_pb2_grpc.NlpServiceStub(c).DetectLanguage for c in self.channels)
        self.samples: dict[str, list[float]] = {"direct": [], "via": []}
        self._count = 0

    def round(self, count: int, record: bool = True) -> None:
        for _ in range(count):
            self._count += 1
            request = nlp_service_pb2.DetectLanguageRequest(model="langid", texts=[f"Bonjour le monde {self._count}"])
            direct, via = _timed(self.direct, request), _timed(self.via, request)
            if record:
                self.samples["direct"].append(direct)
                self.samples["via"].append(via)

    def hop_ms(self) -> float:
        return (median(self.samples["via"]) - median(self.samples["direct"])) * 1000

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


def main() -> None:
    """The traced and the untraced mesh run side by side; their calls alternate in rounds of 20."""
    sink = _Sink()
    receiver = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, receiver)
    port = free_port()
    receiver.add_insecure_port(f"127.0.0.1:{port}")
    receiver.start()
    traced_env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    try:
        with (
            Mesh(["langid"], ["nlp"], env={"OTEL_TRACES_EXPORTER": "none"}) as untraced,
            Mesh(["langid"], ["nlp"], env=traced_env) as traced,
        ):
            paths = [_Hops(untraced, "tracing off"), _Hops(traced, "tracing on (OTLP to a local sink)")]
            try:
                for each in paths:
                    each.round(ROUND, record=False)  # warm-up
                for _ in range(CALLS // ROUND):
                    for each in paths:
                        each.round(ROUND)
            finally:
                for each in paths:
                    each.close()
    finally:
        receiver.stop(1)
    rows = []
    for each in paths:
        for label, key in (("direct to the nlp service", "direct"), ("through the gateway", "via")):
            samples = each.samples[key]
            rows.append(
                [f"DetectLanguage {label}, {each.label}", median(samples) * 1000, percentile(samples, 95) * 1000]
            )
    print_table(["path", "p50 ms", "p95 ms"], rows)
    off, on = paths[0].hop_ms(), paths[1].hop_ms()
    print_table(
        ["gateway hop (p50 via - p50 direct)", "ms"],
        [["tracing off", off], ["tracing on", on], ["tracing adds (target <= 0.2 ms)", on - off]],
    )
    via_ratio = median(paths[1].samples["via"]) / median(paths[0].samples["via"])
    print(f"through the gateway, traced / untraced p50: {via_ratio:.3f}; spans the sink received: {sink.spans}")
