"""Prometheus figures of the NLP service per model: its dynamic batcher's batch sizes and queue depth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from aisemble.hosting.figures import BATCH_SIZE_BUCKETS

if TYPE_CHECKING:
    from services.nlp.runner import NlpRunner

__all__ = ["NlpCollector"]


class NlpCollector(Collector):
    """Reads each hosted model's batcher at scrape time (models come and go with the registry)."""

    def __init__(self, runner: NlpRunner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        sizes = HistogramMetricFamily(
            "aisemble_batcher_batch_size", "Texts in each call of a model's batch function.", labels=["model"]
        )
        queued = GaugeMetricFamily(
            "aisemble_batcher_queued", "Texts waiting for a model's batch call.", labels=["model"]
        )
        for name, batcher in self.runner.batchers().items():
            counts = batcher.stats.sizes
            buckets = [
                (repr(float(bound)), sum(n for size, n in counts.items() if size <= bound))
                for bound in BATCH_SIZE_BUCKETS
            ]
            buckets.append(("+Inf", batcher.stats.calls))
            sizes.add_metric([name], buckets, sum_value=batcher.stats.items)
            queued.add_metric([name], batcher.queued)
        yield from (sizes, queued)
