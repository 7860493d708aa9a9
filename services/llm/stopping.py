"""Stop sequences: generation ends at the first one, and neither it nor anything after it is emitted."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopSequenceFilter"]


class StopSequenceFilter:
    """Filters a stream of text deltas against stop sequences.

    Text that could be the start of a stop sequence is held back until it is clearly not one,
    so a stop sequence split across several deltas is still caught and never sent.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def push(self, delta: str) -> str:
        """Add a delta; return the text that is safe to emit. Sets `stopped` when a stop sequence appears."""
        if self.stopped:
            return ""
        if not self._stops:
            return delta
        self._pending += delta
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[: min(hits)], ""
            return out
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(self._pending)), hold, -1):
                if self._pending.endswith(stop[:k]):
                    hold = k
                    break
        out = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(out) :]
        return out

    def flush(self) -> str:
        """Text held back at the end of generation (it turned out not to be a stop sequence)."""
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out
