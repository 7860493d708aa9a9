"""Finds a vision model's files inside the model store, and checks those that are unpickled against a manifest."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from aisemble.config.models import ModelSpec
from aisemble.errors import FailedPreconditionError
from aisemble.store.errors import ManifestError
from aisemble.store.files import sha256_file
from aisemble.store.manifest import MANIFEST_NAME
from aisemble.store.model_store import ModelStore

__all__ = ["IMPORT_HINT", "ModelFiles", "model_files", "verify_store_file"]

log = logging.getLogger(__name__)

#: How to bring one's own files into the store so that they can be loaded (said whenever one is refused).
IMPORT_HINT = (
    "bring your own weights into the store with `aisemble models import <folder or file> --name <artifact>` "
    "and set model_path to that artifact"
)


def _outside(spec: ModelSpec, name: str, where: Path, key: str) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"model '{spec.name}': {key} {name!r} is outside {where}: a model reads files inside the model store only",
        reason="MODEL_FILE_OUTSIDE_STORE",
        metadata={"model": spec.name, "file": name},
    )


def _confined(spec: ModelSpec, folder: Path, name: str, key: str) -> Path:
    """folder/name when it stays inside folder (no absolute path, `~`, `..`, nor a symlink out), before any file
    is opened; FAILED_PRECONDITION (MODEL_FILE_OUTSIDE_STORE) otherwise."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith("~") or ".." in pure.parts:
        raise _outside(spec, name, folder, key)
    path = folder / name
    base = folder.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise _outside(spec, name, folder, key)
    return path


class ModelFiles:
    """A model's folder and what its manifest says about it (`info`, empty for user-supplied files)."""

    def __init__(
        self, folder: Path, info: Mapping[str, Any], file: Path | None = None, store: ModelStore | None = None
    ) -> None:
        self.folder = folder
        self.info = dict(info)
        self.file = file  # set when model_path names a file rather than a folder
        self.store = store

    def verified(self, spec: ModelSpec, path: Path) -> Path:
        """path once its artifact's manifest vouches for it (verify_store_file); for files loaded with pickle."""
        if self.store is None:
            raise _unverified(spec, path, "no model store to check it against")
        return verify_store_file(spec, self.store, path)

    def pick(
        self, spec: ModelSpec, param: str, given: str | None, info_key: str, default: str = "", suffix: str = ""
    ) -> Path:
        """The file `given` by the model's settings (its key: params.<param>), else manifest info[info_key], else
        `default`, else the only `*suffix` file of the folder. FAILED_PRECONDITION when it does not exist."""
        if self.file is not None:
            return self.file
        name = str(given or self.info.get(info_key) or default)
        if not name and suffix:
            found = sorted(p.name for p in self.folder.glob(f"*{suffix}") if p.is_file())
            if len(found) != 1:
                listing = ", ".join(found) or "none"
                raise FailedPreconditionError(
                    f"model '{spec.name}': set params.{param} to the {suffix} file to use in {self.folder} "
                    f"(found: {listing})",
                    reason="MODEL_FILE_AMBIGUOUS",
                    metadata={"model": spec.name},
                )
            name = found[0]
        path = _confined(spec, self.folder, name, f"params.{param}")
        if not path.is_file():
            raise FailedPreconditionError(
                f"model '{spec.name}': {path} is missing", reason="MODEL_FILE_MISSING", metadata={"model": spec.name}
            )
        return path


def model_files(spec: ModelSpec, store: ModelStore | None) -> ModelFiles:
    """Resolve spec.model_path in the store.

    A folder with a manifest.json is a prepared artifact: checked with `store.require` (sizes against the
    manifest) and its `info` returned. A folder or file without one holds user-supplied weights (for
    example ONNX files): used as they are, but a file that would be unpickled must pass verify_store_file.
    model_path must stay inside the store (FAILED_PRECONDITION, MODEL_FILE_OUTSIDE_STORE).
    """
    if store is None:
        raise FailedPreconditionError(f"model '{spec.name}' needs the model store", metadata={"model": spec.name})
    if not spec.model_path:
        raise FailedPreconditionError(
            f"model '{spec.name}' has no model_path: name its folder (or file) in the model store",
            reason="MODEL_PATH_MISSING",
            metadata={"model": spec.name},
        )
    target = _confined(spec, store.root, spec.model_path, "model_path")
    if target.is_file():
        return ModelFiles(target.parent, {}, file=target, store=store)
    if "/" not in spec.model_path and (target / MANIFEST_NAME).is_file():
        folder = store.require(spec.model_path)
        manifest = store.manifest(spec.model_path)
        return ModelFiles(folder, manifest.info if manifest else {}, store=store)
    if target.is_dir():
        log.info("model %s: %s has no manifest; using its files as supplied", spec.name, target)
        return ModelFiles(target, {}, store=store)
    raise FailedPreconditionError(
        f"model '{spec.name}': {target} does not exist: put the model's files there, or run "
        f"`aisemble models prepare {spec.model_path}` if it is a shipped artifact",
        reason="ARTIFACT_MISSING",
        metadata={"model": spec.name, "artifact": spec.model_path},
    )


def verify_store_file(spec: ModelSpec, store: ModelStore, path: Path) -> Path:
    """path, once the manifest.json of the store artifact holding it lists it with the sha256 it has now.

    For files that are loaded with pickle (a PyTorch .pt runs code when loaded): only what the store built or
    imported, unchanged, is. Call it right before loading. FAILED_PRECONDITION otherwise, with how to import.
    """
    try:
        relative = path.resolve().relative_to(store.root)
    except ValueError:
        raise _outside(spec, str(path), store.root, "the file") from None
    if len(relative.parts) < 2:
        raise _unverified(spec, path, f"{path.name} is not inside an artifact folder of the store")
    artifact, inside = relative.parts[0], PurePosixPath(*relative.parts[1:]).as_posix()
    try:
        manifest = store.manifest(artifact)
    except (ManifestError, ValueError) as exc:
        raise _unverified(spec, path, f"the manifest of '{artifact}' cannot be used ({exc})") from None
    if manifest is None:
        raise _unverified(spec, path, f"'{artifact}' has no {MANIFEST_NAME}: the store did not build it")
    entry = manifest.files.get(inside)
    if manifest.artifact != artifact or entry is None:
        raise _unverified(spec, path, f"{MANIFEST_NAME} of '{artifact}' does not list {inside}")
    if sha256_file(path) != entry.sha256:
        raise FailedPreconditionError(
            f"model '{spec.name}': {inside} of '{artifact}' does not match the sha256 in its {MANIFEST_NAME} "
            f"(changed since the store wrote it); it is not loaded: {IMPORT_HINT}",
            reason="MODEL_FILE_CHECKSUM_MISMATCH",
            metadata={"model": spec.name, "artifact": artifact, "file": inside},
        )
    return path


def _unverified(spec: ModelSpec, path: Path, why: str) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"model '{spec.name}': {why}; {path.name} would be unpickled (which can run code), so only files the "
        f"model store built or imported, with a matching checksum, are loaded: {IMPORT_HINT}",
        reason="MODEL_FILE_UNVERIFIED",
        metadata={"model": spec.name, "file": path.name},
    )
