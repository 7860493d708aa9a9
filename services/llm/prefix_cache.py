"""Prefix reuse: the caches of finished sequences by their tokens, so a prompt that starts the same way (a shared
system prompt, a chat's earlier turns) prefills only what is new."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PrefixCache", "PrefixHit"]


@dataclass(frozen=True)
class PrefixHit:
    """The longest cached prefix of a prompt: its length in tokens and the one-row cache that holds it (and
    maybe more columns: take the first `length`)."""

    length: int
    kv: Any


@dataclass
class _Entry:
    tokens: np.ndarray
    kv: Any
    size: int


class PrefixCache:
    """At most `max_bytes` of one-row caches, least recently used out first, keyed by (adapter, tokens).

    `store` keeps a finished sequence's cache (its prompt and the answer it was fed); an entry that is a prefix of
    a newer one is dropped. `lookup` finds the entry sharing the longest prefix with a prompt, at least
    `min_tokens` long and shorter than the prompt (its last token must run to give the next token's logits).
    """

    def __init__(self, max_bytes: int, kv_bytes: Callable[[Any], int], min_tokens: int = 16) -> None:
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._kv_bytes = kv_bytes
        self._entries: collections.OrderedDict[tuple[int | None, int], _Entry] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._serial = 0
        self.hits = 0
        self.misses = 0
        self.tokens_reused = 0

    @property
    def enabled(self) -> bool:
        """False when the budget is 0 (params.prefix_cache_mb: 0)."""
        return self.max_bytes > 0

    @property
    def size_bytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def lookup(self, adapter: int | None, prompt: Sequence[int]) -> PrefixHit | None:
        """The longest usable cached prefix of a prompt for this adapter, or None."""
        if not self.enabled or len(prompt) <= self.min_tokens:
            return None
        wanted = np.asarray(prompt, dtype=np.int64)
        best: tuple[int, tuple[int | None, int]] | None = None
        with self._lock:
            for key, entry in self._entries.items():
                if key[0] != adapter:
                    continue
                span = min(entry.tokens.size, wanted.size - 1)
                differs = np.flatnonzero(entry.tokens[:span] != wanted[:span])
                common = int(differs[0]) if differs.size else span
                if common >= self.min_tokens and (best is None or common > best[0]):
                    best = (common, key)
            if best is None:
                self.misses += 1
                return None
            self._entries.move_to_end(best[1])
            self.hits += 1
            self.tokens_reused += best[0]
            return PrefixHit(best[0], self._entries[best[1]].kv)

    def store(self, adapter: int | None, tokens: Sequence[int], kv: Any) -> None:
        """Keep a one-row cache of exactly these tokens (a copy the caller will not change)."""
        if not self.enabled or len(tokens) < self.min_tokens:
            return
        array = np.asarray(tokens, dtype=np.int64)
        size = self._kv_bytes(kv)
        if size > self.max_bytes:
            return
        with self._lock:
            for key, entry in list(self._entries.items()):
                if key[0] != adapter:
                    continue
                if entry.tokens.size >= array.size and np.array_equal(entry.tokens[: array.size], array):
                    self._entries.move_to_end(key)  # an entry covers these tokens already
                    return
                if np.array_equal(entry.tokens, array[: entry.tokens.size]):  # the new entry covers it
                    self._drop(key)
            self._serial += 1
            self._entries[(adapter, self._serial)] = _Entry(array, kv, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def forget(self, adapter: int | None) -> None:
        """Drop an adapter's entries (it was unloaded)."""
        with self._lock:
            for key in [key for key in self._entries if key[0] == adapter]:
                self._drop(key)

    def _drop(self, key: tuple[int | None, int]) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
