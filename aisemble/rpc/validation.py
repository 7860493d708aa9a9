"""Request checks every RPC shares, by descriptor: an enum field holding a number its enum does not define."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from aisemble.errors import FieldViolation, InvalidArgumentError

__all__ = [
    "MAX_REPORTED",
    "UNKNOWN_ENUM_VALUE",
    "check_request",
    "enum_violations",
    "holds_enums",
]

#: The ErrorInfo reason of a request refused for an enum number outside its enum.
UNKNOWN_ENUM_VALUE = "UNKNOWN_ENUM_VALUE"
#: How many bad fields one refusal names (the walk stops there).
MAX_REPORTED = 8


@dataclass(frozen=True)
class _Field:
    """A field of a message type that can hold an enum value, itself or somewhere below it."""

    name: str
    repeated: bool
    #: The enum of the value (of a map: of its values), or None when the value is a message that holds enums.
    enum: EnumDescriptor | None
    #: Whether it is a map (a map key is never an enum: its values are what is checked).
    is_map: bool = False


@dataclass(frozen=True)
class _Bad:
    """An enum field holding a number outside its enum."""

    path: str
    number: int
    enum: EnumDescriptor


#: Message type -> its fields that can hold enums (empty: nothing to check, at no cost).
_plans: dict[Descriptor, tuple[_Field, ...]] = {}
_plans_lock = threading.Lock()


def _map_value(field: FieldDescriptor) -> FieldDescriptor | None:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        return entry.fields_by_name["value"]
    return None


def _reachable(root: Descriptor) -> list[Descriptor]:
    """Every message type a message of `root` can contain, `root` included (cycles are fine)."""
    seen, order, todo = {root}, [root], [root]
    while todo:
        for field in todo.pop().fields:
            if field.message_type is not None and field.message_type not in seen:
                seen.add(field.message_type)
                order.append(field.message_type)
                todo.append(field.message_type)
    return order


def _value_kind(field: FieldDescriptor) -> FieldDescriptor:
    """The field that says what a value is: a map's value field, else the field itself."""
    return _map_value(field) or field


def _holds(message_type: Descriptor, holds: dict[Descriptor, bool]) -> bool:
    """Whether a type holds enums, by this computation or by an earlier one's plan."""
    return holds.get(message_type, False) or bool(_plans.get(message_type))


def _compute(root: Descriptor) -> None:
    """Plan `root` and every type below it: a fixed point, since types may contain each other."""
    types = [t for t in _reachable(root) if t not in _plans]
    holds = {t: any(_value_kind(f).enum_type is not None for f in t.fields) for t in types}
    changed = True
    while changed:
        changed = False
        for message_type in types:
            if holds[message_type]:
                continue
            for field in message_type.fields:
                value = _value_kind(field)
                if value.message_type is not None and _holds(value.message_type, holds):
                    holds[message_type] = changed = True
                    break
    for message_type in types:
        fields = []
        for field in message_type.fields:
            value = _value_kind(field)
            is_map = value is not field
            if value.enum_type is not None:
                fields.append(_Field(field.name, field.is_repeated, value.enum_type, is_map))
            elif value.message_type is not None and _holds(value.message_type, holds):
                fields.append(_Field(field.name, field.is_repeated, None, is_map))
        _plans[message_type] = tuple(fields)


def _plan(message_type: Descriptor) -> tuple[_Field, ...]:
    plan = _plans.get(message_type)
    if plan is None:
        with _plans_lock:
            if message_type not in _plans:
                _compute(message_type)
            plan = _plans[message_type]
    return plan


def holds_enums(message_type: Descriptor) -> bool:
    """Whether a message of this type can hold an enum value anywhere (computed once per type)."""
    return bool(_plan(message_type))


def _key(key: object) -> str:
    """A map key as a path shows it: a string quoted (a long one cut short), a number or bool as it reads."""
    if isinstance(key, str):
        return json.dumps(key if len(key) <= 40 else key[:37] + "...", ensure_ascii=False)
    return str(key).lower()


def _describe(bad: _Bad) -> str:
    values = bad.enum.values
    known = ", ".join(f"{v.name} ({v.number})" for v in values[:16]) + (", ..." if len(values) > 16 else "")
    return f"{bad.number} is not a value of {bad.enum.full_name}: one of {known}"


def _walk(message: Message, prefix: str) -> Iterator[_Bad]:
    for field in _plan(message.DESCRIPTOR):
        path = prefix + field.name
        if field.is_map:
            entries = getattr(message, field.name)
            for key in sorted(entries) if len(entries) > 1 else entries:
                yield from _value(field, entries[key], f"{path}[{_key(key)}]")
        elif field.repeated:
            for index, item in enumerate(getattr(message, field.name)):
                yield from _value(field, item, f"{path}[{index}]")
        elif field.enum is not None:
            yield from _value(field, getattr(message, field.name), path)
        elif message.HasField(field.name):
            yield from _walk(getattr(message, field.name), path + ".")


def _value(field: _Field, value: object, path: str) -> Iterator[_Bad]:
    if field.enum is None:
        assert isinstance(value, Message)
        yield from _walk(value, path + ".")
    elif value not in field.enum.values_by_number:
        assert isinstance(value, int)
        yield _Bad(path, value, field.enum)


def _first_bad(message: Message, limit: int) -> list[_Bad]:
    if not _plan(message.DESCRIPTOR):
        return []
    found = []
    for bad in _walk(message, ""):
        found.append(bad)
        if len(found) >= limit:
            break
    return found


def enum_violations(message: Message, limit: int = MAX_REPORTED) -> list[FieldViolation]:
    """The first `limit` enum fields of `message` (at any depth) whose number is not a value of their enum,
    named by path (`strategy`, `members[2].kind`, `labels["a"]`); [] at once for a type that holds no enum."""
    return [FieldViolation(bad.path, _describe(bad)) for bad in _first_bad(message, limit)]


def check_request(message: Message) -> None:
    """Raise InvalidArgumentError (reason UNKNOWN_ENUM_VALUE, one violation per bad field) when any enum field
    of the request holds a number outside its enum (proto3 enums are open: any int32 arrives)."""
    found = _first_bad(message, MAX_REPORTED)
    if not found:
        return
    raise InvalidArgumentError(
        "; ".join(f"{bad.path}: {bad.number} is not a value of {bad.enum.full_name}" for bad in found),
        reason=UNKNOWN_ENUM_VALUE,
        metadata={"field": found[0].path, "enum": found[0].enum.full_name, "number": str(found[0].number)},
        field_violations=[FieldViolation(bad.path, _describe(bad)) for bad in found],
    )
