"""A loaded causal LM shared by the registry entries that name it, and the process-wide pool that shares it."""

from __future__ import annotations

import abc
import json
import logging
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import numpy as np

from aisemble.errors import FailedPreconditionError
from services.llm.scheduler import BatchLimits, ContinuousBatcher
from services.llm.structured import FormatCompiler

__all__ = ["ENGINES", "DecoderEngine", "EnginePool"]

log = logging.getLogger(__name__)


class DecoderEngine(abc.ABC):
    """One causal LM in memory: its tokenizer, its forward passes (alone and batched) and its batchers.

    Every registry entry that names the same artifact on the same runtime with the same runtime settings
    serves from one engine (the pool below), and so do the LoRA adapters on it: `add_adapter` loads an
    adapter's low-rank matrices beside the shared weights and returns its id, and every forward pass takes
    one adapter id per row (None: the base), so sequences of the base and of several adapters share one
    batch. An entry's continuous batching is one of the engine's batchers, by its limits: entries with the
    same limits share a batch.
    A cache ("kv") is runtime-specific, [batch, heads, length, dim] per layer with left padding.
    """

    #: Whether this runtime serves LoRA adapters unmerged (add_adapter).
    serves_adapters = False

    def __init__(self, path: Path, device: str) -> None:
        from transformers import AutoTokenizer

        self.path = path
        self.device = device
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        self.config: dict[str, Any] = json.loads((path / "config.json").read_text())
        self.eos_token_ids = frozenset(self._eos_ids())
        self.generation_defaults = self._read_generation_defaults()
        vocab = int(self.config.get("vocab_size") or len(self.tokenizer))
        self.formats = FormatCompiler(self.tokenizer, vocab, self.eos_token_ids)  # structured output's grammars
        self._batchers: dict[BatchLimits, tuple[ContinuousBatcher, int]] = {}
        self._lock = threading.Lock()

    # --- to implement ---
    @abc.abstractmethod
    def load(self, settings: Any) -> None:
        """Load the network (weights from self.path) with the entry's runtime settings; then warm it up."""

    @abc.abstractmethod
    def forward(self, input_ids: list[int], past: Any, past_length: int, adapter: int | None) -> tuple[np.ndarray, Any]:
        """One sequence's new tokens after its cache (None: none yet): the next token's logits [vocab] and the
        cache, in the form `prefill` returns (also a long prompt's next chunk)."""

    @abc.abstractmethod
    def prefill(self, prompts: list[list[int]], adapters: list[int | None]) -> tuple[np.ndarray, Any]:
        """Run prompts together, left-padded to the longest: next-token logits [n, vocab] and their cache."""

    @abc.abstractmethod
    def decode_batch(
        self,
        tokens: list[int],
        positions: list[int],
        attention_mask: np.ndarray,
        kv: Any,
        adapters: list[int | None],
    ) -> tuple[np.ndarray, Any]:
        """One token per row after the batch cache: logits [n, vocab] and the cache one column longer."""

    @abc.abstractmethod
    def kv_join(self, batch: Any | None, batch_length: int, arrivals: Any, arrivals_length: int) -> Any:
        """The two caches stacked (batch rows first), both left-padded to the longer length."""

    @abc.abstractmethod
    def kv_select(self, kv: Any, rows: list[int], trim_left: int) -> Any:
        """The cache of the given rows only, without its first trim_left (all-padding) columns."""

    @abc.abstractmethod
    def kv_copy(self, kv: Any, row: int, start: int, stop: int) -> Any:
        """A copy of columns [start, stop) of one row, as a one-row cache of its own (the prefix cache keeps
        it; a later `forward` on it must not change the copy)."""

    @abc.abstractmethod
    def kv_bytes(self, kv: Any) -> int:
        """Bytes a cache holds."""

    def prepare_thread(self) -> None:  # noqa: B027 - runtimes with per-thread settings override it
        """Called on a thread before it runs forward passes (a batcher's decoding thread, an unbatched stream's)."""

    def add_adapter(self, path: Path) -> int:
        """Load a LoRA adapter (peft folder) beside the weights; its id for forward passes."""
        raise FailedPreconditionError(f"this runtime does not serve LoRA adapters ({path.name})")

    def remove_adapter(self, adapter: int) -> None:  # noqa: B027 - runtimes with adapters override it
        """Forget an adapter."""

    # --- shared ---
    def warm_up(self) -> None:
        """The first forward pass allocates and picks kernels; check the logits fit the tokenizer."""
        logits, _kv = self.forward(self.tokenizer("Hello")["input_ids"], None, 0, None)
        if logits.shape[-1] < len(self.tokenizer) - 1024:
            raise FailedPreconditionError(f"{self.path.name}: logits size does not match the tokenizer")

    def batcher(self, limits: BatchLimits) -> ContinuousBatcher:
        """The batcher with these limits (made on first use; `release_batcher` once per call)."""
        with self._lock:
            batcher, users = self._batchers.get(limits, (None, 0))
            if batcher is None:
                batcher = ContinuousBatcher(self, limits)
            self._batchers[limits] = (batcher, users + 1)
            return batcher

    def release_batcher(self, limits: BatchLimits) -> None:
        """One user fewer of a batcher; the last one closes it (its sequences end as cancelled)."""
        with self._lock:
            batcher, users = self._batchers[limits]
            if users > 1:
                self._batchers[limits] = (batcher, users - 1)
                return
            del self._batchers[limits]
        batcher.close()

    def close(self) -> None:
        """Stop every batcher and drop the network (the pool calls it when the last entry goes)."""
        with self._lock:
            batchers = [batcher for batcher, _users in self._batchers.values()]
            self._batchers.clear()
        for batcher in batchers:
            batcher.close()

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        sources = [self.config.get("eos_token_id")]
        generation = self.path / "generation_config.json"
        if generation.exists():
            sources.append(json.loads(generation.read_text()).get("eos_token_id"))
        sources.append(self.tokenizer.eos_token_id)
        for source in sources:
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list):
                ids.update(int(i) for i in source)
        return ids

    def _read_generation_defaults(self) -> dict[str, float]:
        generation = self.path / "generation_config.json"
        if not generation.exists():
            return {}
        values = json.loads(generation.read_text())
        return {
            k: float(values[k]) for k in ("temperature", "top_p", "top_k") if isinstance(values.get(k), int | float)
        }

    @staticmethod
    def left_padded(prompts: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """input_ids, attention_mask and position_ids of prompts left-padded to the longest (batched prefill)."""
        longest = max(len(p) for p in prompts)
        input_ids = np.zeros((len(prompts), longest), dtype=np.int64)
        attention_mask = np.zeros((len(prompts), longest), dtype=np.int64)
        for row, prompt in enumerate(prompts):
            input_ids[row, longest - len(prompt) :] = prompt
            attention_mask[row, longest - len(prompt) :] = 1
        position_ids = np.maximum(attention_mask.cumsum(axis=1) - 1, 0)
        return input_ids, attention_mask, position_ids


class EnginePool:
    """The engines of this process by key (runtime, artifact, device, runtime settings), counted by user:
    the first `acquire` of a key loads it, later ones share it, the last `release` closes it."""

    def __init__(self) -> None:
        self._engines: dict[Hashable, tuple[DecoderEngine, int]] = {}
        self._loading: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def acquire(self, key: Hashable, build: Callable[[], DecoderEngine]) -> DecoderEngine:
        """The engine of a key, built (blocking) by the first caller; concurrent callers wait for that load."""
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                found = self._engines.get(key)
                if found is not None:
                    self._engines[key] = (found[0], found[1] + 1)
                    return found[0]
            engine = build()
            with self._lock:
                self._engines[key] = (engine, 1)
            log.info("loaded %s (%s)", engine.path.name, type(engine).__name__)
            return engine

    def release(self, key: Hashable) -> None:
        """One user fewer; the last closes the engine."""
        with self._lock:
            found = self._engines.get(key)
            if found is None:
                return
            engine, users = found
            if users > 1:
                self._engines[key] = (engine, users - 1)
                return
            del self._engines[key]
        engine.close()

    def users(self, key: Hashable) -> int:
        """How many entries share the engine of a key now (0: not loaded)."""
        with self._lock:
            found = self._engines.get(key)
            return found[1] if found else 0


#: The engines of this process (one LLM service hosts every local text-generation entry in one pool).
ENGINES = EnginePool()
