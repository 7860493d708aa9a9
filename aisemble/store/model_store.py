"""The read-only model store that serving processes use: one verified folder per artifact, with its manifest."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from aisemble.config.state import state_dir
from aisemble.store.errors import ArtifactMissingError, ManifestError, SourcePackageMissingError
from aisemble.store.files import human_size, progress_bar, sha256_file
from aisemble.store.manifest import MANIFEST_NAME, FileEntry, Manifest

__all__ = [
    "ASIDE_PREFIX",
    "ArtifactState",
    "ArtifactStatus",
    "ModelStore",
    "VerifyResult",
    "check_artifact_name",
    "default_store_root",
    "package_dir",
]

logger = logging.getLogger("aisemble.store")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

#: While an artifact is replaced, the old one waits under this prefix + its name (a hidden folder, never an
#: artifact: names start with a letter or digit). The builder restores it if a crash left nothing under the
#: name, and deletes it once the new artifact is in place (aisemble.store.builder).
ASIDE_PREFIX = ".old-"


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking an artifact's files against its manifest."""

    artifact: str
    ok: bool
    deep: bool
    problems: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.ok


class ArtifactState(StrEnum):
    """State of an artifact in status()."""

    OK = "ok"
    MISSING = "missing"
    CORRUPT = "corrupt"
    STALE = "stale"


@dataclass(frozen=True)
class ArtifactStatus:
    """One row of `aisemble models status`."""

    artifact: str
    state: ArtifactState
    detail: str
    path: Path
    recipe_version: int | None
    """version of the registered recipe (None: no recipe, e.g. an artifact copied in by hand)."""
    manifest: Manifest | None


# --- helpers -------------------------------------------------------------------------------------


def default_store_root() -> Path:
    """$AISEMBLE_MODEL_STORE if set, else <state dir>/models (<repository root>/.aisemble/models by default)."""
    env = os.environ.get("AISEMBLE_MODEL_STORE")
    if env:
        return Path(env).expanduser()
    return state_dir() / "models"


def package_dir(module: str, requirement: str | None = None) -> Path:
    """Folder of an installed package, found without importing it (many model packages import missing things)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SourcePackageMissingError(module, requirement or module.replace("_", "-"))
    return Path(next(iter(spec.submodule_search_locations)))


def check_artifact_name(artifact: str) -> str:
    """The name itself when it is a valid artifact name (it names a folder of the root); ValueError otherwise."""
    if not _NAME_RE.match(artifact):
        raise ValueError(f"invalid artifact name {artifact!r}: lower-case letters, digits, '.', '_' and '-' only")
    return artifact


# --- the store -----------------------------------------------------------------------------------


class ModelStore:
    """A folder of artifacts, one sub-folder each with a manifest.json; read and verified, never built here.

    Building is aisemble.store.builder.StoreBuilder's (a ModelStore that also knows recipes). Hidden entries
    of the root (build folders, an artifact set aside while it is replaced, the lock) are never artifacts.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def path(self, artifact: str) -> Path:
        """Folder of an artifact (whether or not it exists)."""
        return self.root / check_artifact_name(artifact)

    def manifest(self, artifact: str) -> Manifest | None:
        """The artifact's manifest, None when it has none; ManifestError when it cannot be read."""
        path = self.path(artifact) / MANIFEST_NAME
        if not path.is_file():
            return None
        return Manifest.read(path)

    def verify(self, artifact: str, deep: bool = True, progress: bool = False) -> VerifyResult:
        """Check the files against the manifest: existence and size, and with deep=True their sha256 too."""
        try:
            manifest = self.manifest(artifact)
        except ManifestError as exc:
            return VerifyResult(artifact, False, deep, (str(exc),))
        if manifest is None:
            return VerifyResult(artifact, False, deep, ("no manifest",))
        if manifest.artifact != artifact:
            return VerifyResult(artifact, False, deep, (f"manifest is for '{manifest.artifact}'",))
        folder = self.path(artifact)
        problems: list[str] = []
        to_hash: list[tuple[str, FileEntry]] = []
        for rel, entry in sorted(manifest.files.items()):
            file = folder / rel
            if not file.is_file():
                problems.append(f"{rel}: missing")
            elif (size := file.stat().st_size) != entry.size:
                problems.append(f"{rel}: size {size}, expected {entry.size}")
            else:
                to_hash.append((rel, entry))
        if deep:
            total = sum(entry.size for _, entry in to_hash)
            with progress_bar(total, f"verify {artifact}", progress) as bar:
                for rel, entry in to_hash:
                    if sha256_file(folder / rel, bar) != entry.sha256:
                        problems.append(f"{rel}: sha256 mismatch")
        return VerifyResult(artifact, not problems, deep, tuple(problems))

    def require(self, artifact: str) -> Path:
        """Folder of a prepared artifact after a fast (size-only) check; ArtifactMissingError otherwise."""
        result = self.verify(artifact, deep=False)
        if not result.ok:
            problem = "is not prepared" if result.problems == ("no manifest",) else "is incomplete or damaged"
            if problem != "is not prepared":
                problem += f" ({'; '.join(result.problems[:3])})"
            raise ArtifactMissingError(artifact, self.root, problem)
        current = self._recipe_version(artifact)
        manifest = self.manifest(artifact)
        if current is not None and manifest is not None and manifest.recipe_version != current:
            logger.warning(
                "model artifact %s was built by recipe version %d, the current one is %d: "
                "run `aisemble models prepare %s`",
                artifact,
                manifest.recipe_version,
                current,
                artifact,
            )
        return self.path(artifact)

    def status(self, deep: bool = False) -> list[ArtifactStatus]:
        """State of every known artifact (the registered ones, with a builder), then of any other one in the root."""
        known = self._known_artifacts()
        names = list(known)
        if self.root.is_dir():
            names += sorted(
                p.name
                for p in self.root.iterdir()
                if not p.name.startswith(".")  # build folders and artifacts set aside are not artifacts
                and p.is_dir()
                and p.name not in known
                and _NAME_RE.match(p.name)
                and (p / MANIFEST_NAME).exists()
            )
        return [self._status_one(name, deep) for name in names]

    # --- what a store that knows recipes adds (see StoreBuilder) ---

    def _known_artifacts(self) -> list[str]:
        """Artifacts status() lists even when they are missing: none for a store that knows no recipes."""
        return []

    def _recipe_version(self, artifact: str) -> int | None:
        """Version of the artifact's recipe, None when the store knows none."""
        return None

    def _stale(self, artifact: str, manifest: Manifest) -> str | None:
        """Why an intact artifact no longer matches its recipe; never, for a store that knows no recipes."""
        return None

    def _status_one(self, name: str, deep: bool) -> ArtifactStatus:
        version = self._recipe_version(name)
        path = self.path(name)
        try:
            manifest = self.manifest(name)
        except ManifestError as exc:
            return ArtifactStatus(name, ArtifactState.CORRUPT, str(exc), path, version, None)
        if manifest is None:
            return ArtifactStatus(name, ArtifactState.MISSING, "not prepared", path, version, None)
        check = self.verify(name, deep=deep)
        if not check.ok:
            return ArtifactStatus(name, ArtifactState.CORRUPT, "; ".join(check.problems), path, version, manifest)
        stale = self._stale(name, manifest)
        if stale:
            return ArtifactStatus(name, ArtifactState.STALE, stale, path, version, manifest)
        src = manifest.source
        origin = f"{src.package} {src.version}" if src.package else ", ".join(src.artifacts) or "?"
        size = human_size(manifest.size_bytes)
        detail = f"{size}, recipe v{manifest.recipe_version}, from {origin}, {manifest.created_at}"
        return ArtifactStatus(name, ArtifactState.OK, detail, path, version, manifest)
