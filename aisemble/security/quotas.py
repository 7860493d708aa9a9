"""Per-key quotas over a sliding window (requests, output tokens, concurrent calls) and per-key usage totals."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aisemble.config.state import state_dir
from aisemble.errors import ResourceExhaustedError
from aisemble.security.keys import ApiKey, write_private

__all__ = ["KeyUsage", "QuotaBook", "UsageFile", "default_usage_path", "gateway_usage_path", "total_usage"]


def default_usage_path() -> Path:
    """<state>/auth/usage.json: per-key totals of a gateway built without a replica address."""
    return state_dir() / "auth" / "usage.json"


def gateway_usage_path(address: str) -> Path:
    """<state>/auth/usage/<address>.json: one gateway replica's per-key totals (each replica writes its own)."""
    name = "".join(c if c.isalnum() or c in ".-" else "_" for c in address)
    return state_dir() / "auth" / "usage" / f"{name}.json"


@dataclass
class KeyUsage:
    """What one key has used since it was made (the gateway's totals)."""

    requests: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    rejected: int = 0


@dataclass
class _Window:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0
    active: int = 0


class QuotaBook:
    """Admits or refuses each call of a key (RESOURCE_EXHAUSTED with RetryInfo) and keeps its usage."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self.usage: dict[str, KeyUsage] = {}
        self.changed = False

    def _window(self, key_id: str, now: float) -> _Window:
        window = self._windows.setdefault(key_id, _Window())
        horizon = now - self.window_s
        while window.requests and window.requests[0] <= horizon:
            window.requests.popleft()
        while window.tokens and window.tokens[0][0] <= horizon:
            window.token_sum -= window.tokens.popleft()[1]
        return window

    def _usage(self, key_id: str) -> KeyUsage:
        return self.usage.setdefault(key_id, KeyUsage())

    def _refuse(self, key: ApiKey, what: str, reason: str, retry_after_s: float) -> ResourceExhaustedError:
        self._usage(key.key_id).rejected += 1
        self.changed = True
        return ResourceExhaustedError(
            f"key {key.key_id} is over its quota of {what}; retry in {retry_after_s:.1f} s",
            reason=reason,
            metadata={"key_id": key.key_id},
            retry_after_s=round(max(0.05, retry_after_s), 3),
        )

    def admit(self, key: ApiKey, count_request: bool = True) -> None:
        """Take one call of `key` in, or raise ResourceExhaustedError; release() must follow an admitted call.

        count_request=False (a call the mesh makes on the key's behalf): only the token quota applies.
        """
        now = self._clock()
        window = self._window(key.key_id, now)
        if key.tpm is not None and window.token_sum >= key.tpm:
            freed, wait = window.token_sum, self.window_s
            for at, tokens in window.tokens:
                freed -= tokens
                if freed < key.tpm:
                    wait = at + self.window_s - now
                    break
            raise self._refuse(key, f"{key.tpm} output tokens per {self.window_s:g} s", "TOKEN_QUOTA_EXCEEDED", wait)
        if count_request:
            if key.rpm is not None and len(window.requests) >= key.rpm:
                wait = window.requests[0] + self.window_s - now
                raise self._refuse(key, f"{key.rpm} requests per {self.window_s:g} s", "RATE_LIMITED", wait)
            if key.max_concurrent is not None and window.active >= key.max_concurrent:
                raise self._refuse(key, f"{key.max_concurrent} concurrent calls", "CONCURRENCY_LIMITED", 1.0)
            window.requests.append(now)
            self._usage(key.key_id).requests += 1
            self.changed = True
        window.active += 1

    def release(self, key: ApiKey) -> None:
        """An admitted call ended."""
        window = self._windows.get(key.key_id)
        if window is not None and window.active > 0:
            window.active -= 1

    def add_tokens(self, key: ApiKey, output_tokens: int, cost: float) -> None:
        """Output tokens (and cost) a call of the key produced, from the responses' usage."""
        if output_tokens <= 0 and cost <= 0:
            return
        now = self._clock()
        window = self._window(key.key_id, now)
        if output_tokens > 0:
            window.tokens.append((now, output_tokens))
            window.token_sum += output_tokens
        usage = self._usage(key.key_id)
        usage.output_tokens += max(0, output_tokens)
        usage.cost += max(0.0, cost)
        self.changed = True


@dataclass
class UsageFile:
    """The per-key totals on disk (JSON, 0600), so they survive a gateway restart and `aisemble keys list` sees them."""

    path: Path = field(default_factory=default_usage_path)

    def read(self) -> dict[str, KeyUsage]:
        """key id -> totals; empty when there is no file (or it cannot be read)."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            return {key: KeyUsage(**value) for key, value in document.get("keys", {}).items()}
        except (FileNotFoundError, ValueError, TypeError):
            return {}

    def write(self, usage: dict[str, KeyUsage]) -> None:
        """Replace the file with these totals."""
        document = {"format": 1, "keys": {key: asdict(value) for key, value in usage.items()}}
        write_private(self.path, json.dumps(document, indent=2) + "\n")


def total_usage() -> dict[str, KeyUsage]:
    """Every gateway replica's per-key totals in this state directory, summed (for `aisemble keys list`)."""
    totals: dict[str, KeyUsage] = {}
    folder = state_dir() / "auth" / "usage"
    files = [default_usage_path(), *(sorted(folder.glob("*.json")) if folder.is_dir() else [])]
    for path in files:
        for key, used in UsageFile(path).read().items():
            total = totals.setdefault(key, KeyUsage())
            total.requests += used.requests
            total.output_tokens += used.output_tokens
            total.cost += used.cost
            total.rejected += used.rejected
    return totals
