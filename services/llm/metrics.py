"""Prometheus figures of the LLM service per model: generations running, tokens generated, continuous batching (batch
sizes, queue depth and wait, first-token time, prefix reuse)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from aisemble.hosting.host import ModelHost

__all__ = ["LlmCollector"]


class LlmCollector(Collector):
    """Reads every hosted model at scrape time (models come and go with the registry): the compute counters a
    backend reports in `info()` (`active_sequences`, `tokens_generated`: local backends) and its batcher's."""

    def __init__(self, host: ModelHost) -> None:
        self.host = host

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "aisemble_llm_active_sequences", "Generations the model is computing now.", labels=["model"]
        )
        generated = CounterMetricFamily(
            "aisemble_llm_generated_tokens", "Tokens the model generated (cancelled generations too).", labels=["model"]
        )
        running = GaugeMetricFamily("aisemble_llm_batch_running", "Sequences in the running batch.", labels=["model"])
        waiting = GaugeMetricFamily(
            "aisemble_llm_batch_waiting", "Sequences waiting for a batch slot or being prefilled.", labels=["model"]
        )
        steps = CounterMetricFamily("aisemble_llm_batch_steps", "Batched decoding steps.", labels=["model"])
        tokens = CounterMetricFamily(
            "aisemble_llm_batch_tokens", "Tokens decoded in batched steps (steps x batch size).", labels=["model"]
        )
        first_token = HistogramMetricFamily(
            "aisemble_llm_time_to_first_token_seconds",
            "From joining the batcher's queue to the first token.",
            labels=["model"],
        )
        batch_size = HistogramMetricFamily(
            "aisemble_llm_batch_size", "Sequences in each batched decoding step.", labels=["model"]
        )
        queue_wait = HistogramMetricFamily(
            "aisemble_llm_queue_wait_seconds",
            "From joining the batcher's queue to the start of the prefill.",
            labels=["model"],
        )
        prefix_hits = CounterMetricFamily(
            "aisemble_llm_prefix_cache_hits", "Prompts that started from a cached prefix.", labels=["model"]
        )
        for name, hosted in list(self.host.models.items()):
            backend = hosted.backend
            if backend is None:
                continue
            facts = backend.info()
            if "active_sequences" in facts:
                active.add_metric([name], facts["active_sequences"])
            if "tokens_generated" in facts:
                generated.add_metric([name], facts["tokens_generated"])
            batcher = getattr(backend, "batcher", None)
            if batcher is None:
                continue
            stats = batcher.stats
            running.add_metric([name], batcher.running)
            waiting.add_metric([name], batcher.waiting)
            steps.add_metric([name], stats.steps)
            tokens.add_metric([name], stats.batched_tokens)
            stats.first_token_times.add_to(first_token, [name])
            stats.batch_sizes.add_to(batch_size, [name])
            stats.queue_waits.add_to(queue_wait, [name])
            prefix_hits.add_metric([name], stats.prefix_hits)
        yield from (
            active,
            generated,
            running,
            waiting,
            steps,
            tokens,
            first_token,
            batch_size,
            queue_wait,
            prefix_hits,
        )
