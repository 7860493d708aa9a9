"""Prometheus figures of the LLM service per model: generations running, tokens generated, continuous batching."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
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
        first_token = SummaryMetricFamily(
            "aisemble_llm_time_to_first_token_seconds",
            "From joining the batcher's queue to the first token.",
            labels=["model"],
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
            first_token.add_metric([name], stats.first_tokens, stats.first_token_seconds)
        yield from (active, generated, running, waiting, steps, tokens, first_token)
