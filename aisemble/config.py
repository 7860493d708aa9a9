"""The one schema for configs/models.yaml (the registry) and configs/mesh.yaml (who serves where)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from aisemble.errors import FieldViolation, InvalidArgumentError

__all__ = [
    "CONFIG_DIR",
    "MODEL_NAME_PATTERN",
    "SERVICE_FOR_TASK",
    "TASKS",
    "ConfigError",
    "MeshConfig",
    "ModelSpec",
    "SelectionRules",
    "ServiceEndpoint",
    "load_mesh",
    "load_models",
    "load_selection",
    "model_from_mapping",
    "model_to_mapping",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where configs live unless AISEMBLE_CONFIG_DIR says otherwise.
CONFIG_DIR = Path(os.environ.get("AISEMBLE_CONFIG_DIR", REPO_ROOT / "configs"))

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


class ConfigError(InvalidArgumentError):
    """A config file or registry entry that breaks the schema; the message names file, model and field."""

    default_reason = "INVALID_CONFIG"


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


# --- field checks: each returns the cleaned value or raises ValueError with a short reason ---


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {type(value).__name__})")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)} (got {value!r})")
        return str(value)

    return check


def _int(minimum: int = 0) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum} (got {value!r})")
        return value

    return check


def _non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a finite number >= 0 (got {value!r})")
    return float(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false (got {value!r})")
    return value


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(value)


def _version(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value):
        raise ValueError(f"must be a non-empty string or number (got {value!r})")
    return str(value)


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be a mapping")
    return dict(value)


def _store_path(value: Any) -> str:
    """A path inside the model store: relative, no '..'."""
    text = _string(value)
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or text.startswith("~"):
        raise ValueError(f"must be a path relative to the model store, without '..' (got {text!r})")
    return text


def _provider(value: Any) -> str:
    from aisemble.backend import known_providers  # late: avoids a cycle at import time

    text = _string(value)
    providers = known_providers()
    if text not in providers:
        raise ValueError(f"unknown provider {text!r}; known: {', '.join(sorted(providers))}")
    return text


_MODEL_FIELDS: dict[str, Callable[[Any], Any]] = {
    "task": _one_of(TASKS),
    "provider": _provider,
    "service": _one_of(SERVICES),
    "model_path": _store_path,
    "model_id": _string,
    "endpoint": _string,
    "max_tokens": _int(1),
    "max_output_tokens": _int(1),
    "cost_per_token": _non_negative_number,
    "cost_per_input_token": _non_negative_number,
    "device": _one_of(DEVICES),
    "quantization": _string,
    "domains": _string_list,
    "languages": _string_list,
    "tags": _string_list,
    "version": _version,
    "description": _string,
    "preload": _bool,
    "params": _mapping,
    "lineage": _mapping,
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


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_models(path: Path | None = None) -> dict[str, ModelSpec]:
    """Read and validate a models.yaml: `models: {name: {task, provider, ...}}`."""
    path = path or CONFIG_DIR / "models.yaml"
    document = _read_yaml(path)
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


@dataclass(frozen=True)
class ServiceEndpoint:
    """Where one mesh service (or the gateway) listens."""

    name: str
    addresses: tuple[str, ...]
    metrics_port: int = -1


@dataclass(frozen=True)
class MeshConfig:
    """The mesh layout: the gateway, each service's replicas, and the shared limits."""

    gateway: ServiceEndpoint
    services: Mapping[str, ServiceEndpoint]
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent_rpcs: int = 256
    grace_s: float = 10.0


_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


def _endpoint(path: Path, name: str, raw: Any) -> ServiceEndpoint:
    where = f"{path}: service '{name}'"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    unknown = set(raw) - {"address", "addresses", "metrics_port"}
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
    addresses = raw.get("addresses", [raw["address"]] if "address" in raw else [])
    if not isinstance(addresses, list) or not addresses:
        raise ConfigError(f"{where}: field 'addresses': must be a non-empty list of host:port")
    for address in addresses:
        if not isinstance(address, str) or not _ADDRESS.match(address):
            raise ConfigError(f"{where}: field 'addresses': {address!r} is not host:port")
    metrics_port = raw.get("metrics_port", -1)
    if isinstance(metrics_port, bool) or not isinstance(metrics_port, int) or not -1 <= metrics_port <= 65535:
        raise ConfigError(f"{where}: field 'metrics_port': must be a port number, or -1 for none")
    return ServiceEndpoint(name=name, addresses=tuple(addresses), metrics_port=metrics_port)


def load_mesh(path: Path | None = None) -> MeshConfig:
    """Read and validate mesh.yaml; AISEMBLE_GATEWAY_ADDR overrides the gateway address."""
    path = path or CONFIG_DIR / "mesh.yaml"
    document = _read_yaml(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must be a mapping")
    unknown = set(document) - {"gateway", "services", "limits"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    gateway = _endpoint(path, "gateway", document.get("gateway"))
    if os.environ.get("AISEMBLE_GATEWAY_ADDR"):
        gateway = ServiceEndpoint("gateway", (os.environ["AISEMBLE_GATEWAY_ADDR"],), gateway.metrics_port)
    raw_services = document.get("services") or {}
    if not isinstance(raw_services, dict):
        raise ConfigError(f"{path}: 'services' must be a mapping of service name to addresses")
    services = {}
    for name, raw in raw_services.items():
        if name not in SERVICES:
            raise ConfigError(f"{path}: service '{name}': not one of {', '.join(SERVICES)}")
        services[name] = _endpoint(path, name, raw)
    limits = document.get("limits") or {}
    if not isinstance(limits, dict):
        raise ConfigError(f"{path}: 'limits' must be a mapping")
    known_limits = {"max_message_bytes": _int(1024), "max_concurrent_rpcs": _int(1), "grace_s": _non_negative_number}
    values: dict[str, Any] = {}
    for key, raw in limits.items():
        if key not in known_limits:
            raise ConfigError(f"{path}: limits: unknown field '{key}'; known: {', '.join(known_limits)}")
        try:
            values[key] = known_limits[key](raw)
        except ValueError as exc:
            raise ConfigError(f"{path}: limits: field '{key}': {exc}") from None
    return MeshConfig(gateway=gateway, services=services, **values)


@dataclass(frozen=True)
class SelectionRules:
    """configs/selection.yaml: how the gateway picks a model for `auto`."""

    domains: Mapping[str, tuple[re.Pattern[str], ...]]
    learned_router_model: str = ""
    learned_router_min_score: float = 0.6
    language_detector: str = "langid"
    weights: Mapping[str, float] = field(default_factory=dict)
    default_output_tokens: int = 256


_WEIGHTS = ("domain_match", "language_match", "language_mismatch", "cost_per_1k_output_tokens", "latency_p50_seconds")


def load_selection(path: Path | None = None) -> SelectionRules:
    """Read and validate selection.yaml; every pattern must compile."""
    path = path or CONFIG_DIR / "selection.yaml"
    document = _read_yaml(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must be a mapping")
    unknown = set(document) - {"domains", "learned_router", "language_detector", "weights", "default_output_tokens"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    domains: dict[str, tuple[re.Pattern[str], ...]] = {}
    for name, entry in (document.get("domains") or {}).items():
        patterns = entry.get("patterns") if isinstance(entry, dict) else None
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            raise ConfigError(f"{path}: domain '{name}': field 'patterns': must be a list of regular expressions")
        try:
            domains[str(name)] = tuple(re.compile(p, re.IGNORECASE) for p in patterns)
        except re.error as exc:
            raise ConfigError(f"{path}: domain '{name}': field 'patterns': {exc}") from None
    router = document.get("learned_router") or {}
    if not isinstance(router, dict):
        raise ConfigError(f"{path}: learned_router must be a mapping with model and min_score")
    weights = document.get("weights") or {}
    if not isinstance(weights, dict) or set(weights) - set(_WEIGHTS):
        raise ConfigError(f"{path}: weights: known fields are {', '.join(_WEIGHTS)}")
    clean_weights: dict[str, float] = {}
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{path}: weights: field '{key}': must be a number")
        clean_weights[key] = float(value)
    try:
        min_score = float(router.get("min_score", 0.6))
        default_output = _int(1)(document.get("default_output_tokens", 256))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return SelectionRules(
        domains=domains,
        learned_router_model=str(router.get("model", "")),
        learned_router_min_score=min_score,
        language_detector=str(document.get("language_detector", "langid")),
        weights=clean_weights,
        default_output_tokens=default_output,
    )
