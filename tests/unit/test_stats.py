"""The gateway's live per-model figures: counts, latency percentiles over a window, tokens per second, cost."""

from __future__ import annotations

import pytest

from gateway import stats as stats_module
from gateway.stats import ModelFigures, StatsBook


def test_a_model_never_used_has_zero_figures():
    figures = StatsBook().get("unknown")
    assert (figures.requests, figures.errors, figures.output_tokens, figures.cost_total) == (0, 0, 0, 0.0)
    assert figures.percentile(50) is None
    assert figures.tokens_per_second == 0.0
    assert figures.last_updated == 0.0


def test_get_returns_the_same_figures_each_time_and_models_are_kept_apart():
    book = StatsBook()
    book.record("a", 1.0, ok=True)
    assert book.get("a") is book.get("a")
    assert book.get("a").requests == 1 and book.get("b").requests == 0


def test_record_counts_requests_errors_cost_and_when(monkeypatch):
    monkeypatch.setattr(stats_module.time, "time", lambda: 1234.5)
    book = StatsBook()
    book.record("m", 0.5, ok=True, cost=0.25)
    book.record("m", 0.7, ok=False)
    book.record("m", 0.1, ok=True, cost=0.5)
    figures = book.get("m")
    assert figures.requests == 3 and figures.errors == 1
    assert figures.cost_total == pytest.approx(0.75)
    assert list(figures.latencies) == [0.5, 0.7, 0.1]
    assert figures.last_updated == 1234.5


def test_tokens_per_second_counts_only_requests_that_produced_tokens():
    book = StatsBook()
    book.record("m", 2.0, ok=True, output_tokens=100)
    book.record("m", 5.0, ok=True)  # an embedding, a failure...: no output tokens, its time is not generation
    book.record("m", 3.0, ok=True, output_tokens=150)
    figures = book.get("m")
    assert figures.output_tokens == 250
    assert figures.generation_seconds == pytest.approx(5.0)
    assert figures.tokens_per_second == pytest.approx(50.0)
    assert figures.requests == 3


def test_percentiles_pick_the_nearest_rank():
    figures = ModelFigures()
    for seconds in (0.5, 0.1, 0.4, 0.2, 0.3):  # any order
        figures.latencies.append(seconds)
    assert figures.percentile(0) == 0.1
    assert figures.percentile(25) == 0.2
    assert figures.percentile(50) == 0.3
    assert figures.percentile(90) == 0.5  # round(0.9 * 4) = 4: the largest
    assert figures.percentile(100) == 0.5


def test_one_latency_is_every_percentile():
    figures = ModelFigures()
    figures.latencies.append(0.42)
    assert figures.percentile(1) == figures.percentile(50) == figures.percentile(99) == 0.42


def test_percentiles_are_over_the_recent_window_only():
    book = StatsBook()
    for _ in range(1000):
        book.record("m", 10.0, ok=True)
    for _ in range(1000):
        book.record("m", 1.0, ok=True)
    figures = book.get("m")
    assert len(figures.latencies) == 1000
    assert figures.percentile(100) == 1.0  # the slow, older requests have left the window
    assert figures.requests == 2000  # the counts are not windowed


def test_a_zero_length_generation_does_not_divide_by_zero():
    figures = ModelFigures(output_tokens=10, generation_seconds=0.0)
    assert figures.tokens_per_second == 0.0


def test_reads_add_no_entry_and_a_deregistered_model_is_forgotten():
    book = StatsBook()
    assert book.get("never-used").requests == 0 and len(book) == 0
    book.record("m", 0.1, True, 3, 0.01)
    assert len(book) == 1 and book.get("m").requests == 1
    book.forget("m")
    assert len(book) == 0 and book.get("m").requests == 0
