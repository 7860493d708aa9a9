"""The registry's store: models.yaml in the state directory, seeded from configs/; validated atomic writes; watchers."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from aisemble.config.models import ModelSpec, load_models, model_to_mapping
from aisemble.config.schema import CONFIG_DIR
from aisemble.config.security import ProviderPolicy
from aisemble.config.state import state_dir, write_atomically
from aisemble.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
)
from aisemble.rpc.registry_servicer import ModelChange, ModelTable

__all__ = [
    "ModelRegistry",
    "default_registry_path",
    "provider_violations",
    "seed_registry",
    "store_path_violations",
    "write_models_file",
]

log = logging.getLogger(__name__)

#: The variable an OpenAI entry reads its API key from when params.api_key_env is not set.
_DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
_HEADER = "# The model registry (see the comment block of the shipped file for the fields).\n"


def _leading_comments(path: Path) -> str:
    """The comment block at the top of the file, kept when the registry rewrites it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return _HEADER
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    return "".join(header) or _HEADER


def _strings(value: Any, field: str) -> Iterator[tuple[str, str]]:
    """Every string inside a params value (nested mappings and lists too), with its field path."""
    if isinstance(value, str):
        yield field, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{field}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, f"{field}[{index}]")


def _escapes(text: str, bases: Iterable[Path], root: Path | None) -> str | None:
    """Why a string naming a file would reach outside the store (None: it stays inside, or names no file).

    Absolute, `~` and `..` are refused outright; a relative path is resolved (through any symlink on its way)
    from each folder it may be read from, and refused when it lands outside the store root.
    """
    parts = text.replace("\\", "/").split("/")  # '..\\' too: refused, whatever the OS
    if text.startswith("/"):
        return f"must be a path inside the model store, not an absolute path (got {text!r})"
    if text.startswith("~"):
        return f"must be a path inside the model store, not a home folder (got {text!r})"
    if ".." in parts:
        return f"must be a path inside the model store, without '..' (got {text!r})"
    if root is None:
        return None
    for base in bases:
        try:
            target = (base / text).resolve()
        except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop: no file the OS would open
            continue
        if target != root and root not in target.parents:
            return f"resolves outside the model store through a symbolic link (got {text!r})"
    return None


def store_path_violations(spec: ModelSpec, store_root: Path | None) -> list[FieldViolation]:
    """Every file a registry entry could name that would be read from outside the model store.

    The gateway knows no backend, so this is generic: model_path, and every string in params that looks like
    a path (absolute, `~`, a `..` segment) or that, relative to the model's folder or to the store root,
    resolves outside the store (a symbolic link out of it). A service checks the files it opens again.
    """
    root = store_root.resolve() if store_root is not None else None
    violations: list[FieldViolation] = []
    if spec.model_path:
        problem = _escapes(spec.model_path, [root] if root else [], root)
        if problem:
            violations.append(FieldViolation("model.model_path", problem))
    bases = [root / spec.model_path, root] if root and spec.model_path else [root] if root else []
    for field, text in _strings(dict(spec.params), "model.params"):
        if text and (problem := _escapes(text, bases, root)):
            violations.append(FieldViolation(field, problem))
    return violations


def provider_violations(spec: ModelSpec, providers: ProviderPolicy) -> list[FieldViolation]:
    """Where the entry would send requests and which secret it would send, when the policy does not allow it.

    An OpenAI entry that names no api_key_env reads OPENAI_API_KEY, so that default is checked too. An entry
    without an endpoint uses the one the service's operator configured (OPENAI_BASE_URL or OpenAI's).
    """
    violations: list[FieldViolation] = []
    if spec.endpoint and (problem := providers.endpoint_problem(spec.endpoint)):
        violations.append(FieldViolation("model.endpoint", problem))
    params = dict(spec.params)
    if "api_key_env" in params:
        name = params["api_key_env"]
        if not isinstance(name, str):
            violations.append(FieldViolation("model.params.api_key_env", "must be an environment variable name"))
        elif problem := providers.api_key_env_problem(name):
            violations.append(FieldViolation("model.params.api_key_env", problem))
    elif spec.provider == "openai" and (problem := providers.api_key_env_problem(_DEFAULT_API_KEY_ENV)):
        violations.append(FieldViolation("model.params.api_key_env", f"not set: the default {problem}"))
    return violations


def _refuse(spec: ModelSpec, violations: list[FieldViolation], reason: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        "; ".join(f"{v.field}: {v.description}" for v in violations),
        reason=reason,
        metadata={"model": spec.name},
        field_violations=violations,
    )


def write_models_file(path: Path, specs: Iterable[ModelSpec]) -> None:
    """Write models.yaml so that a crash at any instant leaves the old or the new file, never a mix.

    Write a temporary file in the same folder, fsync it, rename it over the old one, fsync the folder.
    """
    document = {"models": {spec.name: model_to_mapping(spec) for spec in specs}}
    text = _leading_comments(path) + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    write_atomically(path, text)


def default_registry_path() -> Path:
    """<state>/registry/models.yaml: the registry's state, never the shipped configs/models.yaml."""
    return state_dir() / "registry" / "models.yaml"


def _digest(spec: ModelSpec) -> str:
    return hashlib.sha256(json.dumps(model_to_mapping(spec), sort_keys=True, default=str).encode()).hexdigest()


def seed_registry(path: Path, seed: Path | None = None) -> None:
    """Bring the registry's state file in step with the shipped seed (configs/models.yaml, read-only).

    The first start copies the seed (its comments too). Later starts merge what a newer seed brings: an entry
    the state has never seen is added, a seed entry the state still holds unchanged is updated to the new seed;
    an entry the operator changed or deregistered stays as the operator left it. <state>/registry/seed.json
    remembers which seed entries were applied (by digest).
    """
    seed = seed or CONFIG_DIR / "models.yaml"
    applied_path = path.with_name("seed.json")
    seeded = {spec.name: spec for spec in load_models(seed).values()}
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, seed.read_text(encoding="utf-8"))
        write_atomically(applied_path, json.dumps({n: _digest(s) for n, s in seeded.items()}, indent=1))
        log.info("registry: seeded %s from %s (%d models)", path, seed, len(seeded))
        return
    try:
        applied: dict[str, str] = json.loads(applied_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        applied = {}
    models = load_models(path)
    changed = []
    for name, spec in seeded.items():
        digest = _digest(spec)
        if applied.get(name) == digest:
            continue
        current = models.get(name)
        if (name not in applied and current is None) or (current is not None and _digest(current) == applied.get(name)):
            models[name] = spec
            changed.append(name)
        applied[name] = digest
    if changed:
        write_models_file(path, models.values())
        log.info("registry: %s brought from the seed %s: %s", path, seed, ", ".join(changed))
    write_atomically(applied_path, json.dumps(applied, indent=1))


class ModelRegistry(ModelTable):
    """Registered models, backed by a models.yaml file that only this class (in the registry service) writes.

    Writes are validated first, serialised (an asyncio lock in-process, flock across processes)
    and atomic. Watchers get every change through a bounded queue. A write may name files inside the model
    store only, endpoints and API key variables that `providers` allows only; the entries of the file itself
    are the operator's configuration and are not checked.
    """

    def __init__(self, path: Path, store_root: Path | None = None, providers: ProviderPolicy | None = None) -> None:
        self.path = path
        self.store_root = store_root
        self.providers = providers or ProviderPolicy()
        super().__init__(load_models(path))
        self._lock = asyncio.Lock()

    # --- writes ---
    def check(self, spec: ModelSpec) -> None:
        """Refuse (INVALID_ARGUMENT, one field violation per problem) a write that names a file outside the
        store, an endpoint or an API key variable the provider policy does not allow; FAILED_PRECONDITION
        when model_path is not in the store."""
        violations = store_path_violations(spec, self.store_root)
        if violations:
            raise _refuse(spec, violations, "PATH_OUTSIDE_STORE")
        violations = provider_violations(spec, self.providers)
        if violations:
            raise _refuse(spec, violations, "PROVIDER_NOT_ALLOWED")
        if not spec.model_path or self.store_root is None:
            return
        root = self.store_root.resolve()
        target = root / spec.model_path
        if not target.exists():
            raise FailedPreconditionError(
                f"model_path '{spec.model_path}' is not in the model store {root}: put the files there first",
                reason="ARTIFACT_MISSING",
                metadata={"model": spec.name, "model_path": spec.model_path},
            )

    async def register(self, spec: ModelSpec, replace_existing: bool = False, validate_only: bool = False) -> ModelSpec:
        """Add (or replace) a model after validating it; persisted before this returns."""
        self.check(spec)
        async with self._lock:
            existing = self._models.get(spec.name)
            if existing is not None and not replace_existing:
                raise AlreadyExistsError(
                    f"model '{spec.name}' is already registered (set replace_existing to replace it)",
                    reason="MODEL_EXISTS",
                    metadata={"model": spec.name},
                )
            if validate_only:
                return spec
            models = dict(self._models)
            models[spec.name] = spec
            await self._persist(models)
        self._notify(ModelChange("updated" if existing else "added", spec))
        return spec

    async def deregister(self, name: str) -> ModelSpec:
        """Remove a model; persisted before this returns."""
        async with self._lock:
            spec = self.get(name)
            models = {k: v for k, v in self._models.items() if k != name}
            await self._persist(models)
        self._notify(ModelChange("removed", spec))
        return spec

    async def _persist(self, models: dict[str, ModelSpec]) -> None:
        def write() -> None:
            lock_path = self.path.with_name(f".{self.path.name}.lock")
            with open(lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                write_models_file(self.path, models.values())

        await asyncio.to_thread(write)
        self._models = models
        log.info("registry: %d models written to %s", len(models), self.path)
