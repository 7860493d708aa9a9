"""The rules of `auto` (configs/selection.yaml): domain patterns, the learned router, weights."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import re2

from aisemble.config.schema import CONFIG_DIR, ConfigError, integer, read_yaml

__all__ = ["DomainPattern", "SelectionRules", "compile_pattern", "load_selection"]


class DomainPattern(Protocol):
    """A compiled domain pattern: its source and a search (RE2's, linear in the text)."""

    @property
    def pattern(self) -> str: ...

    def search(self, text: str) -> Any: ...


def compile_pattern(pattern: str) -> DomainPattern:
    """A case-insensitive RE2 pattern; re2.error when RE2 cannot compile it (lookarounds, backreferences).

    RE2 matches in time linear in the text whatever the pattern, so no request text can stall the gateway.
    """
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # the error is raised (and reported as a ConfigError), not logged to stderr
    compiled: DomainPattern = re2.compile(pattern, options)
    return compiled


@dataclass(frozen=True)
class SelectionRules:
    """configs/selection.yaml: how the gateway picks a model for `auto`."""

    domains: Mapping[str, tuple[DomainPattern, ...]]
    learned_router_model: str = ""
    learned_router_min_score: float = 0.6
    language_detector: str = "langid"
    weights: Mapping[str, float] = field(default_factory=dict)
    default_output_tokens: int = 256


_WEIGHTS = (
    "domain_match",
    "domain_mismatch",
    "language_match",
    "language_mismatch",
    "cost_per_1k_output_tokens",
    "latency_p50_seconds",
)


def load_selection(path: Path | None = None) -> SelectionRules:
    """Read and validate selection.yaml; every pattern must compile as RE2 syntax."""
    path = path or CONFIG_DIR / "selection.yaml"
    document = read_yaml(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must be a mapping")
    unknown = set(document) - {"domains", "learned_router", "language_detector", "weights", "default_output_tokens"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    domains: dict[str, tuple[DomainPattern, ...]] = {}
    for name, entry in (document.get("domains") or {}).items():
        patterns = entry.get("patterns") if isinstance(entry, dict) else None
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            raise ConfigError(f"{path}: domain '{name}': field 'patterns': must be a list of regular expressions")
        compiled = []
        for pattern in patterns:
            try:
                compiled.append(compile_pattern(pattern))
            except re2.error as exc:
                why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
                raise ConfigError(
                    f"{path}: domain '{name}': field 'patterns': {pattern!r} is not valid RE2 ({why}); "
                    "patterns are RE2 syntax: no lookarounds or backreferences"
                ) from None
        domains[str(name)] = tuple(compiled)
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
        default_output = integer(1)(document.get("default_output_tokens", 256))
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
