"""Histograms a model's own loop keeps (a batcher thread, a decoding thread), read at scrape time by its collector."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from prometheus_client.core import HistogramMetricFamily

__all__ = ["BATCH_SIZE_BUCKETS", "QUEUE_WAIT_BUCKETS", "TOKEN_LATENCY_BUCKETS", "Buckets"]

#: Items (sequences, texts) per batched call.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: First-token and inter-token times (vLLM's buckets, to 10 s).
TOKEN_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 10)
#: Seconds a request waits in a batcher's queue.
QUEUE_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Buckets:
    """A histogram without labels or locks: one writer thread adds, a scrape reads a consistent-enough copy."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one value."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        """Values counted."""
        return sum(self.counts)

    def add_to(self, family: HistogramMetricFamily, labels: Sequence[str]) -> None:
        """Add this histogram to a family as one labelled series (cumulative buckets, as Prometheus reads them)."""
        counts, running, buckets = list(self.counts), 0, []
        for bound, count in zip((*(repr(float(b)) for b in self.bounds), "+Inf"), counts, strict=True):
            running += count
            buckets.append((bound, running))
        family.add_metric(list(labels), buckets, sum_value=self.total)
