"""Result cache for deterministic requests: LRU with a TTL and a bound in bytes; streams are replayed."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["CacheEntry", "ResultCache", "cache_key"]


def cache_key(method: str, request_bytes: bytes, model: str, model_version: str) -> str:
    """Canonical key: the method, the request's deterministic serialisation (model resolved), the model version."""
    digest = hashlib.sha256()
    for part in (method.encode(), model.encode(), model_version.encode()):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(request_bytes)
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """Serialised responses (one for a unary call, every message for a stream) and when they expire."""

    responses: tuple[bytes, ...]
    expires_at: float

    @property
    def size(self) -> int:
        """Bytes held."""
        return sum(len(r) for r in self.responses) + 64


class ResultCache:
    """An LRU of CacheEntry bounded by total bytes, each entry living ttl_s seconds."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, ttl_s: float = 300.0, max_entry_bytes: int = 4 * 1024 * 1024):
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> tuple[bytes, ...] | None:
        """The cached responses, or None (counted as a miss)."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at < time.monotonic():
            self._remove(key)
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.responses

    def put(self, key: str, responses: tuple[bytes, ...]) -> bool:
        """Store responses unless they are larger than one entry may be; evicts least recently used."""
        entry = CacheEntry(responses, time.monotonic() + self.ttl_s)
        if entry.size > self.max_entry_bytes or entry.size > self.max_bytes:
            return False
        if key in self._entries:
            self._remove(key)
        self._entries[key] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
        return True

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size

    def __len__(self) -> int:
        return len(self._entries)
