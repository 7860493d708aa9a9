"""Prometheus metrics shared by every server: requests, latency and errors by method and code."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

__all__ = ["RpcMetrics", "serve_metrics"]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RpcMetrics:
    """The RPC counters of one server process, in their own registry (tests may run several servers)."""

    def __init__(self, server_name: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["server", "service", "method"]
        self.requests = Counter(
            "aisemble_rpc_requests", "RPCs finished, by final status code.", [*labels, "code"], registry=self.registry
        )
        self.errors = Counter(
            "aisemble_rpc_errors",
            "RPCs that ended with a status other than OK.",
            [*labels, "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aisemble_rpc_latency_seconds",
            "Time from the start of an RPC to its final status.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.server_name = server_name

    def observe(self, full_method: str, code: str, seconds: float) -> None:
        """Record one finished RPC (`full_method` is '/package.Service/Method')."""
        service, _, method = full_method.lstrip("/").partition("/")
        self.requests.labels(self.server_name, service, method, code).inc()
        if code != "OK":
            self.errors.labels(self.server_name, service, method, code).inc()
        self.latency.labels(self.server_name, service, method).observe(seconds)


def serve_metrics(metrics: RpcMetrics, host: str, port: int) -> int | None:
    """Expose the registry over HTTP for Prometheus; returns the bound port, or None when disabled (port < 0)."""
    if port < 0:
        return None
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    bound = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound
