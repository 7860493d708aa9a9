"""Live per-model figures the guide's performance table only guessed: latency, tokens/s, errors, cost."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["ModelFigures", "StatsBook"]

_WINDOW = 1000  # latencies kept per model for the percentiles


@dataclass
class ModelFigures:
    """Running figures of one model, as seen by the gateway."""

    requests: int = 0
    errors: int = 0
    output_tokens: int = 0
    generation_seconds: float = 0.0
    cost_total: float = 0.0
    last_updated: float = 0.0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))

    def percentile(self, q: float) -> float | None:
        """Latency percentile over the recent window, in seconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    @property
    def tokens_per_second(self) -> float:
        """Output tokens over the time spent producing them."""
        return self.output_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0


class StatsBook:
    """Figures for every model the gateway has routed to."""

    def __init__(self) -> None:
        self._figures: dict[str, ModelFigures] = {}

    def get(self, model: str) -> ModelFigures:
        """Figures of one model (zeros if never used; a read adds no entry)."""
        return self._figures.get(model) or ModelFigures()

    def forget(self, model: str) -> None:
        """Drop a model's figures (it was deregistered): the book holds registered models only."""
        self._figures.pop(model, None)

    def __len__(self) -> int:
        return len(self._figures)

    def record(self, model: str, seconds: float, ok: bool, output_tokens: int = 0, cost: float = 0.0) -> None:
        """One finished request."""
        figures = self._figures.setdefault(model, ModelFigures())
        figures.requests += 1
        figures.errors += 0 if ok else 1
        figures.latencies.append(seconds)
        if output_tokens:
            figures.output_tokens += output_tokens
            figures.generation_seconds += seconds
        figures.cost_total += cost
        figures.last_updated = time.time()
