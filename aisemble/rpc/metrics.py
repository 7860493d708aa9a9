"""Prometheus metrics shared by every server: per RPC and per model (requests by code, latency, first-token and
inter-token times, tokens, cost, cache), calls in flight, and the process (RSS, CPU, threads, open files)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aisemble.hosting.figures import TOKEN_LATENCY_BUCKETS
from aisemble.rpc.calls import CallRecord

__all__ = ["LATENCY_BUCKETS", "RpcMetrics", "serve_metrics"]

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _ThreadsCollector(Collector):
    """process_threads: the OS threads of this process (the client library's process collector has no count)."""

    def collect(self) -> Iterator[Metric]:
        threads = GaugeMetricFamily("process_threads", "OS threads of this process.")
        try:
            threads.add_metric([], float(len(os.listdir("/proc/self/task"))))
        except OSError:
            return
        yield threads


class RpcMetrics:
    """The figures of one server process, in their own registry (tests may run several servers in one process).

    Per-RPC families are labelled by server, service and method; per-model ones by server, model (a registry or
    hosted name, never request text) and method.
    """

    def __init__(self, server_name: str) -> None:
        self.registry = registry = CollectorRegistry()
        self.server_name = server_name
        labels = ["server", "service", "method"]
        self.requests = Counter(
            "aisemble_rpc_requests", "RPCs finished, by final status code.", [*labels, "code"], registry=registry
        )
        self.errors = Counter(
            "aisemble_rpc_errors", "RPCs that ended with a status other than OK.", [*labels, "code"], registry=registry
        )
        self.latency = Histogram(
            "aisemble_rpc_latency_seconds",
            "Time from the start of an RPC to its final status.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        model = ["server", "model"]
        self.model_requests = Counter(
            "aisemble_model_requests",
            "Requests a model served, by RPC and final status code.",
            [*model, "method", "code"],
            registry=registry,
        )
        self.model_latency = Histogram(
            "aisemble_model_request_duration_seconds",
            "Time from the start of a model's request to its final status (a stream: to its end).",
            [*model, "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_token = Histogram(
            "aisemble_model_time_to_first_token_seconds",
            "From the start of a streamed generation to its first token.",
            model,
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=registry,
        )
        self.inter_token = Histogram(
            "aisemble_model_inter_token_latency_seconds",
            "Time per generated token after the first, as the caller receives them.",
            model,
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "aisemble_model_prompt_tokens", "Input tokens of a model's requests.", model, registry=registry
        )
        self.generation_tokens = Counter(
            "aisemble_model_generation_tokens", "Tokens a model generated for its requests.", model, registry=registry
        )
        self.cost = Counter(
            "aisemble_model_cost",
            "Cost of a model's requests, from the registry's prices (in the registry's currency).",
            model,
            registry=registry,
        )
        self.in_flight = Gauge(
            "aisemble_calls_in_flight",
            "Calls being served now (kind: unary or stream).",
            ["server", "kind"],
            registry=registry,
        )
        ProcessCollector(registry=registry)
        registry.register(_ThreadsCollector())
        registry.register(_Forward(PLATFORM_COLLECTOR))
        registry.register(_Forward(GC_COLLECTOR))

    def track_in_flight(self, kind: str, read: Callable[[], float]) -> None:
        """Expose a count of calls in flight (the call limits keep them)."""
        self.in_flight.labels(self.server_name, kind).set_function(read)

    def observe(self, full_method: str, code: str, seconds: float) -> None:
        """Record one finished RPC (`full_method` is '/package.Service/Method')."""
        service, _, method = full_method.lstrip("/").partition("/")
        self.requests.labels(self.server_name, service, method, code).inc()
        if code != "OK":
            self.errors.labels(self.server_name, service, method, code).inc()
        self.latency.labels(self.server_name, service, method).observe(seconds)

    def observe_call(self, record: CallRecord, code: str, seconds: float) -> None:
        """Record one finished RPC and, when a model served it, its per-model figures (an answer from the result
        cache counts as a request, not as generated tokens, cost or token times)."""
        self.observe(record.method, code, seconds)
        if not record.model:
            return
        server, model = self.server_name, record.model
        method = record.method.rpartition("/")[2]
        self.model_requests.labels(server, model, method, code).inc()
        self.model_latency.labels(server, model, method).observe(seconds)
        if record.cache == "hit":
            return
        if record.first_token_s is not None:
            self.first_token.labels(server, model).observe(record.first_token_s)
        if record.token_gaps:
            inter = self.inter_token.labels(server, model)
            for gap in record.token_gaps:
                inter.observe(gap)
        if record.prompt_tokens:
            self.prompt_tokens.labels(server, model).inc(record.prompt_tokens)
        if record.output_tokens:
            self.generation_tokens.labels(server, model).inc(record.output_tokens)
        if record.cost > 0:
            self.cost.labels(server, model).inc(record.cost)


class _Forward(Collector):
    """Another registry's collector read into this one."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        yield from self._collector.collect()


def serve_metrics(metrics: RpcMetrics, host: str, port: int) -> int | None:
    """Expose the registry over HTTP for Prometheus; returns the bound port, or None when disabled (port < 0)."""
    if port < 0:
        return None
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    bound = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound
