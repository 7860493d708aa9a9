"""The registry's schema (configs/models.yaml): tasks, the ModelSpec of one entry, and its validation."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aisemble.config.schema import (
    CONFIG_DIR,
    ConfigError,
    boolean,
    integer,
    mapping,
    non_negative_number,
    one_of,
    read_yaml,
    store_path,
    string,
    string_list,
    version_string,
)
from aisemble.errors import FieldViolation
from aisemble.hosting.catalogue import known_providers

__all__ = [
    "DEVICES",
    "MODEL_NAME_PATTERN",
    "SERVICES",
    "SERVICE_FOR_TASK",
    "TASKS",
    "ModelSpec",
    "load_models",
    "model_from_mapping",
    "model_to_mapping",
]

#: Registry task names (the yaml spelling of aisemble.common.v1.Task).
TASKS = (
    "text-generation",
    "embedding",
    "text-classification",
    "language-detection",
    "object-detection",
    "ocr",
    "image-classification",
    "image-segmentation",
    "image-generation",
)
#: Which mesh service hosts a task by default.
SERVICE_FOR_TASK = {
    "text-generation": "llm",
    "embedding": "nlp",
    "text-classification": "nlp",
    "language-detection": "nlp",
    "object-detection": "vision",
    "ocr": "vision",
    "image-classification": "vision",
    "image-segmentation": "vision",
    "image-generation": "vision",
}
SERVICES = ("llm", "nlp", "vision", "multimodal", "ensemble", "finetune")
DEVICES = ("cpu", "cuda", "auto")
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: what a model is, how to run it and what it costs."""

    name: str
    task: str
    provider: str
    service: str
    model_path: str = ""
    model_id: str = ""
    endpoint: str = ""
    max_tokens: int = 0
    max_output_tokens: int = 0
    cost_per_token: float = 0.0
    cost_per_input_token: float = 0.0
    device: str = "cpu"
    quantization: str = "none"
    domains: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    version: str = "1"
    description: str = ""
    preload: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)
    lineage: Mapping[str, Any] = field(default_factory=dict)


def _provider(value: Any) -> str:
    text = string(value)
    providers = known_providers()
    if text not in providers:
        raise ValueError(f"unknown provider {text!r}; known: {', '.join(sorted(providers))}")
    return text


_MODEL_FIELDS: dict[str, Callable[[Any], Any]] = {
    "task": one_of(TASKS),
    "provider": _provider,
    "service": one_of(SERVICES),
    "model_path": store_path,
    "model_id": string,
    "endpoint": string,
    "max_tokens": integer(1),
    "max_output_tokens": integer(1),
    "cost_per_token": non_negative_number,
    "cost_per_input_token": non_negative_number,
    "device": one_of(DEVICES),
    "quantization": string,
    "domains": string_list,
    "languages": string_list,
    "tags": string_list,
    "version": version_string,
    "description": string,
    "preload": boolean,
    "params": mapping,
    "lineage": mapping,
}
_REQUIRED_MODEL_FIELDS = ("task", "provider")


def model_from_mapping(name: Any, entry: Any, where: str = "model") -> ModelSpec:
    """Validate one registry entry and build its ModelSpec; every problem is named in one ConfigError."""
    violations: list[FieldViolation] = []
    if not isinstance(name, str) or not MODEL_NAME_PATTERN.match(name):
        violations.append(
            FieldViolation("name", f"{name!r} must match {MODEL_NAME_PATTERN.pattern} (lower case, digits, . _ -)")
        )
    if not isinstance(entry, dict):
        violations.append(FieldViolation("model", "must be a mapping of fields"))
        entry = {}
    values: dict[str, Any] = {}
    for key in _REQUIRED_MODEL_FIELDS:
        if key not in entry:
            violations.append(FieldViolation(key, "is required"))
    for key, raw in entry.items():
        check = _MODEL_FIELDS.get(key)
        if check is None:
            violations.append(FieldViolation(str(key), f"is not a known field; known: {', '.join(_MODEL_FIELDS)}"))
            continue
        try:
            values[key] = check(raw)
        except ValueError as exc:
            violations.append(FieldViolation(str(key), str(exc)))
    if not violations and "service" not in values:
        values["service"] = SERVICE_FOR_TASK[values["task"]]
    if violations:
        detail = "; ".join(f"field '{v.field}': {v.description}" for v in violations)
        raise ConfigError(f"{where} '{name}': {detail}", field_violations=violations, metadata={"model": str(name)})
    return ModelSpec(name=name, **values)


def model_to_mapping(spec: ModelSpec) -> dict[str, Any]:
    """The yaml form of a ModelSpec: fields left at their defaults are omitted."""
    out: dict[str, Any] = {}
    for f in fields(ModelSpec):
        if f.name == "name":
            continue
        value = getattr(spec, f.name)
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if value != default or f.name in ("task", "provider", "service"):
            out[f.name] = (
                list(value) if isinstance(value, tuple) else (dict(value) if isinstance(value, Mapping) else value)
            )
    return out


def load_models(path: Path | None = None) -> dict[str, ModelSpec]:
    """Read and validate a models.yaml: `models: {name: {task, provider, ...}}`."""
    path = path or CONFIG_DIR / "models.yaml"
    document = read_yaml(path)
    if not isinstance(document, dict) or not isinstance(document.get("models"), dict):
        raise ConfigError(f"{path}: must be a mapping with a 'models' mapping at the top")
    unknown = set(document) - {"models"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    specs: dict[str, ModelSpec] = {}
    for name, entry in document["models"].items():
        try:
            specs[name] = model_from_mapping(name, entry)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.message}", field_violations=exc.field_violations) from None
    return specs
