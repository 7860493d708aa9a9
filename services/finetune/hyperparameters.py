"""Training settings: the defaults per task and the ranges a request must stay within.

| field | CAUSAL_LM default | TEXT_CLASSIFICATION default | accepted |
|---|---|---|---|
| learning_rate | 1e-3 (LoRA weights) | 2e-2 (the head; unfrozen encoder layers learn at 1/100 of it) | 0 < lr <= 0.5 |
| epochs | 5 | 10 | 1 ... 100 |
| batch_size | 4 | 16 | 1 ... 256 |
| max_length | 256 | 128 | 8 ... the base model's context window (at most 4096) |
| lora_rank | 8 | - | 1 ... 256 |
| lora_alpha | 16 | - | 0 < alpha <= 1024 |
| unfrozen_layers | - | 1 | 0 ... the encoder's layer count |
| seed | 0 | 0 | any uint64 |

A field of the other task is refused, not ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aisemble.errors import FieldViolation, InvalidArgumentError
from services.finetune.types import Hyperparameters, Task

__all__ = ["DEFAULTS", "MAX_LENGTH_CAP", "resolve_hyperparameters"]

#: The defaults of each task (seed 0 everywhere: runs are reproducible unless the caller asks otherwise).
DEFAULTS: dict[Task, Hyperparameters] = {
    Task.CAUSAL_LM: Hyperparameters(
        learning_rate=1e-3, epochs=5, batch_size=4, max_length=256, seed=0, lora_rank=8, lora_alpha=16.0
    ),
    Task.TEXT_CLASSIFICATION: Hyperparameters(
        learning_rate=2e-2, epochs=10, batch_size=16, max_length=128, seed=0, unfrozen_layers=1
    ),
}
#: Longest training sequence accepted whatever the base model's window (memory on a CPU host).
MAX_LENGTH_CAP = 4096
_MAX_LEARNING_RATE = 0.5
_MAX_EPOCHS = 100
_MAX_BATCH_SIZE = 256
_MIN_LENGTH = 8
_MAX_LORA_RANK = 256
_MAX_LORA_ALPHA = 1024.0
_ONLY = {
    "lora_rank": Task.CAUSAL_LM,
    "lora_alpha": Task.CAUSAL_LM,
    "unfrozen_layers": Task.TEXT_CLASSIFICATION,
}


def _integer(value: Any, low: int, high: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"must be an integer in [{low}, {high}] (got {value!r})"
    return None


def _positive(value: Any, high: float) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"must be a number in (0, {high:g}] (got {value!r})"
    if not 0 < value <= high:
        return f"must be in (0, {high:g}] (got {value:g})"
    return None


def resolve_hyperparameters(
    task: Task,
    requested: Mapping[str, Any],
    context_window: int,
    encoder_layers: int | None = None,
    prefix: str = "hyperparameters",
) -> Hyperparameters:
    """The effective settings: the request's fields (those set) over the task's defaults, each checked.

    context_window: the base model's; encoder_layers: how many layers its encoder has (classification).
    Every bad field is reported at once, in one InvalidArgumentError.
    """
    violations: list[FieldViolation] = []
    values = DEFAULTS[task].to_dict()
    for name, value in requested.items():
        if name in _ONLY and _ONLY[name] != task:
            violations.append(
                FieldViolation(f"{prefix}.{name}", f"applies to {_ONLY[name].name} jobs only, not {task.name}")
            )
            continue
        values[name] = value
    window = max(_MIN_LENGTH, min(context_window or MAX_LENGTH_CAP, MAX_LENGTH_CAP))
    checks: dict[str, str | None] = {
        "learning_rate": _positive(values["learning_rate"], _MAX_LEARNING_RATE),
        "epochs": _integer(values["epochs"], 1, _MAX_EPOCHS),
        "batch_size": _integer(values["batch_size"], 1, _MAX_BATCH_SIZE),
        "max_length": _integer(values["max_length"], _MIN_LENGTH, window),
        "seed": _integer(values["seed"], 0, 2**64 - 1),
    }
    if task == Task.CAUSAL_LM:
        checks["lora_rank"] = _integer(values["lora_rank"], 1, _MAX_LORA_RANK)
        checks["lora_alpha"] = _positive(values["lora_alpha"], _MAX_LORA_ALPHA)
    else:
        checks["unfrozen_layers"] = _integer(values["unfrozen_layers"], 0, encoder_layers or 0)
    for name, problem in checks.items():
        if problem is not None and name in requested:
            violations.append(FieldViolation(f"{prefix}.{name}", problem))
        elif problem is not None and name == "max_length":
            # The default does not fit this base model: use its whole window instead.
            values["max_length"] = window
        elif problem is not None and name == "unfrozen_layers":
            values["unfrozen_layers"] = min(int(values["unfrozen_layers"]), encoder_layers or 0)
    if violations:
        raise InvalidArgumentError(
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            field_violations=violations,
            reason="INVALID_HYPERPARAMETERS",
        )
    if task == Task.CAUSAL_LM:
        values["lora_alpha"] = float(values["lora_alpha"])
    values["learning_rate"] = float(values["learning_rate"])
    return Hyperparameters.from_dict(values)
