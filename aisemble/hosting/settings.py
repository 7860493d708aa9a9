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
    choices: tuple[Any, ...] | None = None  # the values allowed (each item's, for a list)
    min_items: int | None = None  # a list's length, inclusive
    max_items: int | None = None


def setting(
    default: Any,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    check: Callable[[Any], str | None] | None = None,
    choices: Iterable[Any] | None = None,
    min_items: int | None = None,
    max_items: int | None = None,
) -> Any:
    """A field of a ModelSettings dataclass: its default and bounds (`minimum` and `maximum` inclusive, `above`
    exclusive; for a list, of each item); `choices` the values allowed; `min_items` / `max_items` a list's length
    (inclusive); `check` returns what is wrong with a value, or None. A default of None means "not set"."""
    allowed = tuple(choices) if choices is not None else None
    bounds = _Bounds(minimum, above, maximum, check, allowed, min_items, max_items)
    return dataclasses.field(default=default, metadata={_BOUNDS: bounds})


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


_SCALARS = (bool, int, float, str)
_MISSING: Any = object()  # what a conversion gives for a value of another type, or out of bounds


def _kind(kind: type, plural: bool = False) -> str:
    if plural:
        return {bool: "true or false values", int: "integers", float: "numbers", str: "strings"}[kind]
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


def _count_text(bounds: _Bounds) -> str:
    low, high = bounds.min_items, bounds.max_items
    if low is not None and low == high:
        return f"list of {low} "
    if low is not None and high is not None:
        return f"list of {low} to {high} "
    if low is not None:
        return "non-empty list of " if low == 1 else f"list of at least {low} "
    return f"list of at most {high} " if high is not None else "list of "


def _item_kind(hint: Any) -> type | None:
    """X of a `tuple[X, ...]` annotation (X a bool, int, float or str), else None."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
            return typing.cast(type, args[0])
    return None


def _members(hint: Any) -> tuple[tuple[Any, ...], bool]:
    """(the value types, whether None is allowed) of a field's annotation: bool, int, float, str, a list of one
    of them as `tuple[X, ...]`, a union of these (`int | tuple[int, ...]`: either), any of them | None."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        members = tuple(m for m in args if m is not type(None))
        optional = len(members) < len(args)
    else:
        members, optional = (hint,), False
    for member in members:
        if member not in _SCALARS and _item_kind(member) is None:
            raise TypeError(
                f"a setting is a bool, int, float or str, a tuple[X, ...] of one, a union of those (or | None), "
                f"not {hint!r}"
            )
    return members, optional


def _scalar(raw: Any, kind: type, bounds: _Bounds) -> Any:
    """raw as a `kind` within bounds and choices, else _MISSING. An integral float (8.0, as a protobuf Struct
    carries every number) is an integer."""
    if kind is bool:
        ok = isinstance(raw, bool)
    elif kind is int:
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif kind is float:
        ok = isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw)
    else:
        ok = isinstance(raw, str)
    if not ok:
        return _MISSING
    value = float(raw) if kind is float else raw
    if kind in (int, float) and (
        (bounds.minimum is not None and value < bounds.minimum)
        or (bounds.above is not None and value <= bounds.above)
        or (bounds.maximum is not None and value > bounds.maximum)
    ):
        return _MISSING
    if bounds.choices is not None and value not in bounds.choices:
        return _MISSING
    return value


def _items(raw: Any, kind: type, bounds: _Bounds) -> Any:
    """raw (a YAML or JSON list) as a tuple of `kind`s, each within bounds, of an allowed length; else _MISSING."""
    if not isinstance(raw, list | tuple):
        return _MISSING
    if (bounds.min_items is not None and len(raw) < bounds.min_items) or (
        bounds.max_items is not None and len(raw) > bounds.max_items
    ):
        return _MISSING
    values = tuple(_scalar(item, kind, bounds) for item in raw)
    return _MISSING if any(value is _MISSING for value in values) else values


def _wanted(member: Any, bounds: _Bounds) -> str:
    """What a value of one member type must be, in words."""
    kind = _item_kind(member)
    one = kind or member
    what = _kind(one, plural=kind is not None) + (_bounds_text(bounds) if one in (int, float) else "")
    if bounds.choices is not None:
        listed = ", ".join(repr(choice) for choice in bounds.choices)
        what = f"one of {listed}" if kind is None else f"{what}, each one of {listed}"
    return what if kind is None else f"a {_count_text(bounds)}{what}"


def _convert(raw: Any, hint: Any, bounds: _Bounds) -> Any:
    """The value of one key, checked against its type and bounds; ValueError says what is wrong."""
    members, optional = _members(hint)
    if raw is None and optional:
        return None
    for member in members:
        kind = _item_kind(member)
        value = _scalar(raw, member, bounds) if kind is None else _items(raw, kind, bounds)
        if value is not _MISSING:
            break
    else:
        raise ValueError(f"must be {' or '.join(_wanted(member, bounds) for member in members)} (got {raw!r})")
    problem = bounds.check(value) if bounds.check is not None else None
    if problem:
        raise ValueError(problem)
    return value


class ModelSettings:
    """Base of a model's typed settings (after MLServer's ModelSettings): subclass it as a frozen dataclass whose
    fields, made with `setting()`, are keys of the registry entry's `params`. A field is a bool, int, float or
    str, a list of one of them as `tuple[X, ...]` (a YAML or JSON list; bounds and choices hold for each item),
    a union of these (`int | tuple[int, ...]`: either form), or any of them `| None` (not set).

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
