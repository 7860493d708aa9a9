"""Which backends exist: the `aisemble.backends` entry points, built-in and third-party alike (a leaf module)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

__all__ = ["ENTRY_POINT_GROUP", "backend_entry_point", "known_providers"]

#: Every backend, built-in or plugin, is an entry point of this group, named `<task>.<provider>`
#: (one class for one task of a provider) or `<provider>` (the class's `tasks` say which tasks), with
#: the value `module:Class`. The built-ins are declared in pyproject.toml, next to their services.
ENTRY_POINT_GROUP = "aisemble.backends"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_providers() -> dict[str, set[str]]:
    """provider -> the tasks it is declared for ("*" for a bare provider name: its class says, once imported)."""
    providers: dict[str, set[str]] = {}
    for name in _entry_points():
        task, dot, provider = name.partition(".")
        if dot:
            providers.setdefault(provider, set()).add(task)
        else:
            providers.setdefault(name, set()).add("*")
    return providers


def backend_entry_point(task: str, provider: str) -> EntryPoint | None:
    """The entry point for a task and provider: `<task>.<provider>` first, then the bare `<provider>`."""
    declared = _entry_points()
    return declared.get(f"{task}.{provider}") or declared.get(provider)
