"""LoRA adapters served unmerged on a shared PyTorch base: each batch row gets its own adapter's low-rank update."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aisemble.errors import FailedPreconditionError

__all__ = ["LoraSet", "read_adapter"]

_PREFIX = "base_model.model."
_UNSUPPORTED = ("use_dora", "modules_to_save", "layers_to_transform", "rank_pattern", "alpha_pattern")


@dataclass(frozen=True)
class _Update:
    """One module's low-rank update: out += scale * (x @ a.T) @ b.T."""

    a: torch.Tensor  # [rank, in]
    b: torch.Tensor  # [out, rank]
    scale: float


def read_adapter(path: Path) -> dict[str, _Update]:
    """A peft LoRA folder's updates by module name (e.g. model.layers.0.self_attn.q_proj); FAILED_PRECONDITION
    for what cannot be served unmerged (DoRA, extra trained modules, per-layer ranks, biases)."""
    from safetensors.torch import load_file

    config = json.loads((path / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise FailedPreconditionError(f"{path.name}: a {config.get('peft_type')} adapter is not a LoRA adapter")
    unsupported = [key for key in _UNSUPPORTED if config.get(key)]
    if config.get("bias", "none") != "none":
        unsupported.append("bias")
    if unsupported:
        raise FailedPreconditionError(f"{path.name}: LoRA with {', '.join(unsupported)} cannot be served unmerged")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / rank**0.5 if config.get("use_rslora") else alpha / rank
    weights = load_file(str(path / "adapter_model.safetensors"))
    updates: dict[str, _Update] = {}
    for key, a in weights.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")].removeprefix(_PREFIX)
        b = weights[key.replace(".lora_A.", ".lora_B.")]
        updates[module] = _Update(a.float().contiguous(), b.float().contiguous(), scale)
    if not updates:
        raise FailedPreconditionError(f"{path.name}: adapter_model.safetensors holds no LoRA weights")
    return updates


class _Routing(threading.local):
    """Which rows of the forward pass running on this thread use which adapter: [(adapter, row index)]."""

    groups: list[tuple[int, torch.Tensor | None]] = []


class _LoraLinear(torch.nn.Module):
    """A base Linear plus the low-rank updates of the adapters that target it, applied to their rows only."""

    def __init__(self, base: torch.nn.Linear, routing: _Routing) -> None:
        super().__init__()
        self.base = base
        self.updates: dict[int, _Update] = {}
        self._routing = routing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        for adapter, rows in self._routing.groups:
            update = self.updates.get(adapter)
            if update is None:
                continue
            if rows is None:  # every row
                out = out + (x @ update.a.T) @ update.b.T * update.scale
            else:
                out.index_add_(0, rows, (x[rows] @ update.a.T) @ update.b.T, alpha=update.scale)
        return out


class LoraSet:
    """The adapters loaded on one model. `add` wraps the Linear layers an adapter targets (the first time a
    layer is targeted; the base alone runs unwrapped), `rows(adapters)` routes each row of the next forward
    passes on this thread to its adapter (None: the base)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model
        self._routing = _Routing()
        self._wrapped: dict[str, _LoraLinear] = {}
        self._adapters: dict[int, list[str]] = {}
        self._next = 1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._adapters)

    def add(self, path: Path) -> int:
        """Load an adapter; its id."""
        updates = read_adapter(path)
        with self._lock:
            targets = {name: self._target(name, path) for name in updates}
            adapter, self._next = self._next, self._next + 1
            for name, layer in targets.items():
                layer.updates[adapter] = updates[name]
            self._adapters[adapter] = list(updates)
        return adapter

    def remove(self, adapter: int) -> None:
        """Forget an adapter (its layers stay wrapped; without updates they cost one call each)."""
        with self._lock:
            for name in self._adapters.pop(adapter, []):
                self._wrapped[name].updates.pop(adapter, None)

    def _target(self, name: str, path: Path) -> _LoraLinear:
        found = self._wrapped.get(name)
        if found is not None:
            return found
        try:
            module = self._model.get_submodule(name)
        except AttributeError:
            raise FailedPreconditionError(f"{path.name}: the base model has no module {name}") from None
        if not isinstance(module, torch.nn.Linear):
            raise FailedPreconditionError(f"{path.name}: {name} is a {type(module).__name__}, not a Linear layer")
        parent_name, _, child = name.rpartition(".")
        wrapper = _LoraLinear(module, self._routing)
        setattr(self._model.get_submodule(parent_name) if parent_name else self._model, child, wrapper)
        self._wrapped[name] = wrapper
        return wrapper

    @contextlib.contextmanager
    def rows(self, adapters: list[int | None]) -> Iterator[None]:
        """Route the rows of the forward passes in this block: row i uses adapters[i]."""
        groups: list[tuple[int, Any]] = []
        present = {a for a in adapters if a is not None}
        for adapter in sorted(present):
            if all(a == adapter for a in adapters):
                groups.append((adapter, None))
            else:
                index = [row for row, a in enumerate(adapters) if a == adapter]
                groups.append((adapter, torch.tensor(index, dtype=torch.long)))
        self._routing.groups = groups
        try:
            yield
        finally:
            self._routing.groups = []
