"""Finds a vision model's files: a prepared store artifact (verified manifest) or user-supplied weights."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from aisemble.config.models import ModelSpec
from aisemble.errors import FailedPreconditionError
from aisemble.store.manifest import MANIFEST_NAME
from aisemble.store.model_store import ModelStore

__all__ = ["ModelFiles", "model_files"]

log = logging.getLogger(__name__)


class ModelFiles:
    """A model's folder and what its manifest says about it (`info`, empty for user-supplied files)."""

    def __init__(self, folder: Path, info: Mapping[str, Any], file: Path | None = None) -> None:
        self.folder = folder
        self.info = dict(info)
        self.file = file  # set when model_path names a file rather than a folder

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
        path = self.folder / name
        if ".." in PurePosixPath(name).parts or not path.is_file():
            raise FailedPreconditionError(
                f"model '{spec.name}': {path} is missing", reason="MODEL_FILE_MISSING", metadata={"model": spec.name}
            )
        return path


def model_files(spec: ModelSpec, store: ModelStore | None) -> ModelFiles:
    """Resolve spec.model_path in the store.

    A folder with a manifest.json is a prepared artifact: checked with `store.require` (sizes against the
    manifest) and its `info` returned. A folder or file without one holds user-supplied weights (for
    example YOLO-seg .pt files): used as they are.
    """
    if store is None:
        raise FailedPreconditionError(f"model '{spec.name}' needs the model store", metadata={"model": spec.name})
    if not spec.model_path:
        raise FailedPreconditionError(
            f"model '{spec.name}' has no model_path: name its folder (or file) in the model store",
            reason="MODEL_PATH_MISSING",
            metadata={"model": spec.name},
        )
    target = store.root / spec.model_path
    if target.is_file():
        return ModelFiles(target.parent, {}, file=target)
    if "/" not in spec.model_path and (target / MANIFEST_NAME).is_file():
        folder = store.require(spec.model_path)
        manifest = store.manifest(spec.model_path)
        return ModelFiles(folder, manifest.info if manifest else {})
    if target.is_dir():
        log.info("model %s: %s has no manifest; using its files as supplied", spec.name, target)
        return ModelFiles(target, {})
    raise FailedPreconditionError(
        f"model '{spec.name}': {target} does not exist: put the model's files there, or run "
        f"`aisemble models prepare {spec.model_path}` if it is a shipped artifact",
        reason="ARTIFACT_MISSING",
        metadata={"model": spec.name, "artifact": spec.model_path},
    )
