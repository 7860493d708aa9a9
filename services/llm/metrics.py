"""Prometheus figures of continuous batching, per model: batch occupancy, steps, tokens, time to first token."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from aisemble.hosting.host import ModelHost

__all__ = ["BatchingCollector"]


class BatchingCollector(Collector):
    """Reads every hosted model's batcher at scrape time (models come and go with the registry)."""

    def __init__(self, host: ModelHost) -> None:
        self.host = host

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily("aisemble_llm_batch_running", "Sequences in the running batch.", labels=["model"])
        waiting = GaugeMetricFamily(
            "aisemble_llm_batch_waiting", "Sequences waiting for a batch slot or being prefilled.", labels=["model"]
        )
        steps = CounterMetricFamily("aisemble_llm_batch_steps", "Batched decoding steps.", labels=["model"])
        tokens = CounterMetricFamily(
            "aisemble_llm_batch_tokens", "Tokens decoded in batched steps (steps x batch size).", labels=["model"]
        )
        first_token = SummaryMetricFamily(
            "aisemble_llm_time_to_first_token_seconds",
            "From joining the batcher's queue to the first token.",
            labels=["model"],
        )
        for name, hosted in list(self.host.models.items()):
            batcher = getattr(hosted.backend, "batcher", None)
            if batcher is None:
                continue
            stats = batcher.stats
            running.add_metric([name], batcher.running)
            waiting.add_metric([name], batcher.waiting)
            steps.add_metric([name], stats.steps)
            tokens.add_metric([name], stats.batched_tokens)
            first_token.add_metric([name], stats.first_tokens, stats.first_token_seconds)
        yield from (running, waiting, steps, tokens, first_token)
