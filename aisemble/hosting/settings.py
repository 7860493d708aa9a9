"""Typed per-model settings: frozen dataclasses read once from a registry entry's params, with one error style."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

from aisemble.config.schema import CONFIG_DIR, REPO_ROOT, ConfigError
from aisemble.errors import FailedPreconditionError, FieldViolation

if TYPE_CHECKING:
    from aisemble.config.models import ModelSpec

__all__ = ["REGISTRY_FILE", "ModelSettings", "setting", "settings_error", "unservable"]


def _registry_file() -> str:
    path = CONFIG_DIR / "models.yaml"
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


#: The file registry entries come from (load_models' default, and the gateway's registry by default).
REGISTRY_FILE = _registry_file()

_BOUNDS = "aisemble.setting"


@dataclasses.dataclass(frozen=True)
class _Bounds:
    minimum: float | None = None  # inclusive
    above: float | None = None  # exclusive
    maximum: float | None = None  # inclusive
    check: Callable[[Any], str | None] | None = None  # a description of what is wrong, or None


def setting(
    default: Any,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A field of a ModelSettings dataclass: its default and bounds (`minimum` and `maximum` inclusive, `above`
    exclusive); `check` returns what is wrong with a value, or None. A default of None means "not set"."""
    return dataclasses.field(default=default, metadata={_BOUNDS: _Bounds(minimum, above, maximum, check)})


def settings_error(model: str, problems: Iterable[tuple[str, str]], source: str | None = REGISTRY_FILE) -> ConfigError:
    """The one error of refused settings: a ConfigError naming the file, the model and each `params.<key>`."""
    violations = [FieldViolation(f"params.{key}", description) for key, description in problems]
    where = f"{source}: model '{model}'" if source else f"model '{model}'"
    detail = "; ".join(f"{v.field}: {v.description}" for v in violations)
    metadata = {"model": model, "fields": ",".join(v.field for v in violations)}
    if source:
        metadata["file"] = source
    return ConfigError(f"{where}: {detail}", field_violations=violations, metadata=metadata)


def unservable(error: ConfigError) -> FailedPreconditionError:
    """What a caller (or a load) gets for a model whose settings were refused: FAILED_PRECONDITION with reason
    MODEL_CONFIG_INVALID, the ConfigError's words (the request is fine: the model cannot be served)."""
    model = error.metadata.get("model", "")
    detail = "; ".join(f"{v.field}: {v.description}" for v in error.field_violations) or error.message
    where = f" ({error.metadata['file']})" if "file" in error.metadata else ""
    return FailedPreconditionError(
        f"model '{model}' cannot be served: {detail}{where}",
        reason="MODEL_CONFIG_INVALID",
        metadata=dict(error.metadata),
    )


def _kind(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]


def _bounds_text(bounds: _Bounds) -> str:
    if bounds.minimum is not None and bounds.maximum is not None:
        return f" between {bounds.minimum:g} and {bounds.maximum:g}"
    parts = []
    if bounds.minimum is not None:
        parts.append(f">= {bounds.minimum:g}")
    if bounds.above is not None:
        parts.append(f"> {bounds.above:g}")
    if bounds.maximum is not None:
        parts.append(f"<= {bounds.maximum:g}")
    return " " + " and ".join(parts) if parts else ""


def _split_optional(hint: Any) -> tuple[type, bool]:
    """(the value type, whether None is allowed) of a field's annotation: int, float, bool, str, or X | None."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        if len(members) == 1:
            return members[0], True
    if hint in (bool, int, float, str):
        return hint, False
    raise TypeError(f"a setting is a bool, int, float or str (or one of them | None), not {hint!r}")


def _convert(raw: Any, hint: Any, bounds: _Bounds) -> Any:
    """The value of one key, checked against its type and bounds; ValueError says what is wrong."""
    kind, optional = _split_optional(hint)
    if raw is None and optional:
        return None
    if kind is bool:
        ok = isinstance(raw, bool)
    elif kind is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif kind is float:
        ok = isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw)
    else:
        ok = isinstance(raw, str)
    wanted = f"must be {_kind(kind)}{_bounds_text(bounds) if kind in (int, float) else ''} (got {raw!r})"
    if not ok:
        raise ValueError(wanted)
    value = float(raw) if kind is float else raw
    if kind in (int, float) and (
        (bounds.minimum is not None and value < bounds.minimum)
        or (bounds.above is not None and value <= bounds.above)
        or (bounds.maximum is not None and value > bounds.maximum)
    ):
        raise ValueError(wanted)
    problem = bounds.check(value) if bounds.check is not None else None
    if problem:
        raise ValueError(problem)
    return value


class ModelSettings:
    """Base of a model's typed settings (after MLServer's ModelSettings): subclass it as a frozen dataclass whose
    fields, made with `setting()`, are keys of the registry entry's `params`.

    Parsed once, when the model is loaded: every key this class knows is checked (type, bounds, `check`, then
    `problems()` across fields), and every violation is named in one ConfigError (`settings_error`). Keys the
    class does not know are left to the other settings of the model (params is shared: a backend's files, its
    batching, its zero-shot prompts), except within the class's `namespace`: with namespace "zero_shot_" the
    class owns every key that starts with it (field `template` is key `zero_shot_template`), and refuses a
    key there that is none of its fields (a typo would otherwise be ignored silently).
    """

    #: A key prefix this class owns; its fields are the keys without it. Empty: keys are the field names.
    namespace: ClassVar[str] = ""

    def problems(self) -> list[tuple[str, str]]:
        """Checks across fields, run when every field passed its own: (key, what is wrong) pairs."""
        return []

    @classmethod
    def key(cls, name: str) -> str:
        """The params key of a field."""
        return cls.namespace + name

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, model: str, source: str | None = REGISTRY_FILE) -> Self:
        """The settings in a params mapping (defaults for keys not given); ConfigError naming every bad key."""
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        hints = typing.get_type_hints(cls)
        fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
        values: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        for name, field in fields.items():
            key = cls.key(name)
            if key not in params:
                continue
            try:
                values[name] = _convert(params[key], hints[name], field.metadata.get(_BOUNDS, _Bounds()))
            except ValueError as exc:
                problems.append((key, str(exc)))
        if cls.namespace:
            known = sorted(cls.key(name) for name in fields)
            for key in params:
                if isinstance(key, str) and key.startswith(cls.namespace) and key not in known:
                    problems.append((key, f"is not a known setting; known: {', '.join(known)}"))
        if problems:
            raise settings_error(model, problems, source)
        settings = cls(**values)
        problems = settings.problems()
        if problems:
            raise settings_error(model, problems, source)
        return settings

    @classmethod
    def from_spec(cls, spec: ModelSpec, params: Mapping[str, Any] | None = None) -> Self:
        """The settings of a registry entry (or of `params` in its place); ConfigError when refused."""
        return cls.from_params(spec.params if params is None else params, model=spec.name)

    @classmethod
    def for_serving(cls, spec: ModelSpec, params: Mapping[str, Any] | None = None) -> Self:
        """`from_spec` for a model being loaded or served: a refusal is FAILED_PRECONDITION (MODEL_CONFIG_INVALID)
        with the ConfigError's words (see `unservable`)."""
        try:
            return cls.from_spec(spec, params)
        except ConfigError as exc:
            raise unservable(exc) from None
