"""The model registry: a validated view of configs/models.yaml, atomic serialised writes, and change watchers."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from aisemble.config.models import ModelSpec, load_models, model_to_mapping
from aisemble.errors import AlreadyExistsError, FailedPreconditionError, ModelNotFoundError, PermissionDeniedError

__all__ = ["ModelChange", "ModelRegistry", "write_models_file"]

log = logging.getLogger(__name__)

_HEADER = "# The model registry (see the comment block of the shipped file for the fields).\n"


@dataclass(frozen=True)
class ModelChange:
    """One change seen by watchers: kind is 'added', 'updated' or 'removed'."""

    kind: str
    spec: ModelSpec


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


def write_models_file(path: Path, specs: Iterable[ModelSpec]) -> None:
    """Write models.yaml so that a crash at any instant leaves the old or the new file, never a mix.

    Write a temporary file in the same folder, fsync it, rename it over the old one, fsync the folder.
    """
    document = {"models": {spec.name: model_to_mapping(spec) for spec in specs}}
    text = _leading_comments(path) + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class ModelRegistry:
    """Registered models, backed by a models.yaml file that only this class writes.

    Writes are validated first, serialised (an asyncio lock in-process, flock across processes)
    and atomic. Watchers get every change through a bounded queue.
    """

    def __init__(self, path: Path, store_root: Path | None = None) -> None:
        self.path = path
        self.store_root = store_root
        self._models: dict[str, ModelSpec] = load_models(path)
        self._lock = asyncio.Lock()
        self._watchers: set[asyncio.Queue[ModelChange | None]] = set()

    # --- reads ---
    def all(self) -> list[ModelSpec]:
        """Every registered model, in file order."""
        return list(self._models.values())

    def get(self, name: str) -> ModelSpec:
        """One model by name, or ModelNotFoundError."""
        spec = self._models.get(name)
        if spec is None:
            raise ModelNotFoundError(name, known=list(self._models))
        return spec

    def find(self, name: str) -> ModelSpec | None:
        """One model by name, or None."""
        return self._models.get(name)

    # --- writes ---
    def _check_store_path(self, spec: ModelSpec) -> None:
        if not spec.model_path or self.store_root is None:
            return
        root = self.store_root.resolve()
        target = (root / spec.model_path).resolve()
        if target != root and root not in target.parents:
            raise PermissionDeniedError(
                f"model_path '{spec.model_path}' resolves outside the model store {root}",
                reason="PATH_OUTSIDE_STORE",
                metadata={"model": spec.name, "model_path": spec.model_path},
            )
        if not target.exists():
            raise FailedPreconditionError(
                f"model_path '{spec.model_path}' is not in the model store {root}: put the files there first",
                reason="ARTIFACT_MISSING",
                metadata={"model": spec.name, "model_path": spec.model_path},
            )

    async def register(self, spec: ModelSpec, replace_existing: bool = False, validate_only: bool = False) -> ModelSpec:
        """Add (or replace) a model after validating it; persisted before this returns."""
        self._check_store_path(spec)
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

    # --- watchers ---
    def _notify(self, change: ModelChange) -> None:
        for queue in list(self._watchers):
            if queue.qsize() >= queue.maxsize - 1:  # keep the last place for the end marker
                self._watchers.discard(queue)
                queue.put_nowait(None)
                log.warning("a registry watcher fell behind and was dropped")
            else:
                queue.put_nowait(change)

    @contextlib.asynccontextmanager
    async def watch(self, max_pending: int = 256) -> AsyncIterator[asyncio.Queue[ModelChange | None]]:
        """A queue of changes from now on (None: the watcher fell behind and must reconnect)."""
        queue: asyncio.Queue[ModelChange | None] = asyncio.Queue(max_pending + 1)
        self._watchers.add(queue)
        try:
            yield queue
        finally:
            self._watchers.discard(queue)
