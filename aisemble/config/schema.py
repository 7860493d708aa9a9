"""The shared pieces of every config schema: ConfigError, the field checks, YAML reading, the config folder."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from aisemble.errors import InvalidArgumentError

__all__ = [
    "CONFIG_DIR",
    "REPO_ROOT",
    "ConfigError",
    "boolean",
    "integer",
    "mapping",
    "non_negative_number",
    "one_of",
    "read_yaml",
    "store_path",
    "string",
    "string_list",
    "version_string",
]

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
#: Where configs live unless AISEMBLE_CONFIG_DIR says otherwise.
CONFIG_DIR = Path(os.environ.get("AISEMBLE_CONFIG_DIR", REPO_ROOT / "configs"))


class ConfigError(InvalidArgumentError):
    """A config file or registry entry that breaks the schema; the message names file, model and field."""

    default_reason = "INVALID_CONFIG"


# Field checks: each returns the cleaned value or raises ValueError with a short reason.


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {type(value).__name__})")
    return value


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)} (got {value!r})")
        return str(value)

    return check


def integer(minimum: int = 0) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum} (got {value!r})")
        return value

    return check


def non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a finite number >= 0 (got {value!r})")
    return float(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false (got {value!r})")
    return value


def string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(value)


def version_string(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value):
        raise ValueError(f"must be a non-empty string or number (got {value!r})")
    return str(value)


def mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be a mapping")
    return dict(value)


def store_path(value: Any) -> str:
    """A path inside the model store: relative, no '..'."""
    text = string(value)
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or text.startswith("~"):
        raise ValueError(f"must be a path relative to the model store, without '..' (got {text!r})")
    return text


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
