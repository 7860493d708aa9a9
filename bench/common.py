"""Small helpers shared by the benchmarks: timing statistics and table printing."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["median", "percentile", "print_table"]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of values, by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    """The median."""
    return statistics.median(values)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (pastes straight into the README)."""
    cells = [[str(h) for h in headers], *[[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("\n".join(lines), flush=True)
