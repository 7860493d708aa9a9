"""The builder: a model store that prepares its artifacts from recipes (build, check, hash, move into place)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from aisemble.config.state import fsync_directory, fsync_tree
from aisemble.store.errors import ManifestError, RecipeError, StoreError, UnknownArtifactError
from aisemble.store.files import copy_file, human_size, progress_bar, sha256_file, walk_files
from aisemble.store.manifest import MANIFEST_NAME, FileEntry, Manifest, SourceInfo
from aisemble.store.model_store import ASIDE_PREFIX, ModelStore, check_artifact_name, package_dir
from aisemble.store.recipe import BuildContext, Recipe

__all__ = ["TMP_PREFIX", "PrepareAction", "PrepareResult", "StoreBuilder"]

logger = logging.getLogger("aisemble.store")

#: Prefix of build folders inside the root; anything with it is a leftover once no prepare runs.
TMP_PREFIX = ".tmp-"
_LOCK_NAME = ".lock"


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
    """why it was (re)built, or the error when it failed; then the recipe's summary of the artifact, if any."""
    seconds: float
    path: Path
    size_bytes: int = 0


def _input_checksums(recipe: Recipe, missing_ok: bool = False) -> dict[str, str]:
    """sha256 of each of a recipe's input files by file name ("" for a missing one when missing_ok, else
    RecipeError)."""
    checksums: dict[str, str] = {}
    for path in recipe.inputs:
        if path.is_file():
            checksums[path.name] = sha256_file(path)
        elif missing_ok:
            checksums[path.name] = ""
        else:
            raise RecipeError(f"{path} is missing (recipe {recipe.name} reads it)")
    return checksums


def _summary(recipe: Recipe, manifest: Manifest) -> str:
    """The recipe's one line about a built artifact ("" without a summary, or when it cannot say)."""
    if recipe.summary is None:
        return ""
    try:
        return recipe.summary(manifest.info)
    except Exception as exc:  # noqa: BLE001 - a summary never fails a prepare
        logger.debug("%s: no summary: %s", recipe.name, exc)
        return ""


def _distribution_version(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


class StoreBuilder(ModelStore):
    """A model store that also builds: `prepare` makes its artifacts from the recipes it is given.

    Its status() lists every recipe's artifact (missing ones too) and tells stale ones apart.
    """

    def __init__(self, root: Path | str, recipes: Mapping[str, Recipe]) -> None:
        super().__init__(root)
        self.recipes: Mapping[str, Recipe] = recipes

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

    def import_files(
        self,
        artifact: str,
        source: Path | str,
        info: Mapping[str, Any] | None = None,
        *,
        replace: bool = False,
        progress: bool = False,
    ) -> Manifest:
        """Bring one's own files into the store as artifact `artifact`: a folder's files (hidden ones skipped),
        or one file; returns the manifest written.

        As prepare does, the files are copied into a build folder, hashed, given a manifest.json (their sha256
        and sizes, `info`, no source package) and moved into place at once: a reader sees the old artifact or
        the new one, never part of it, and a crash at any point leaves one of them under the name. Backends
        that unpickle files (Ultralytics .pt) load only such files.
        ValueError for an invalid name, a missing or empty source, a recipe's artifact (prepare would build
        over it), or an existing artifact unless replace is set.
        """
        check_artifact_name(artifact)
        source = Path(source).expanduser()
        if artifact in self.recipes:
            raise ValueError(f"'{artifact}' is the artifact of a recipe (`aisemble models prepare` builds it)")
        if source.is_dir():
            found = [p for p in walk_files(source, hidden=False) if p.relative_to(source).as_posix() != MANIFEST_NAME]
            names = [p.relative_to(source).as_posix() for p in found]
        elif source.is_file() and source.name != MANIFEST_NAME:
            found, names = [source], [source.name]
        else:
            raise ValueError(f"{source} is neither a folder nor a file (other than a {MANIFEST_NAME})")
        if not found:
            raise ValueError(f"{source} holds no files to import")
        details = json.loads(json.dumps(dict(info or {})))  # fails early on values JSON cannot hold
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(artifact)
        with self._lock():
            self._clean_leftovers()  # first: an artifact set aside by a crashed replacement counts as existing
            if (final.exists() or final.is_symlink()) and not replace:
                raise ValueError(f"artifact '{artifact}' already exists in {self.root} (replace it explicitly)")
            tmp = self.root / f"{TMP_PREFIX}{artifact}-{secrets.token_hex(4)}"
            tmp.mkdir()
            try:
                for path, name in zip(found, names, strict=True):
                    copy_file(path, tmp / name, progress)
                manifest = Manifest(
                    artifact=artifact,
                    recipe_version=0,
                    source=SourceInfo(package=None, module=None, version=None, files=names),
                    created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                    files=self._hash_folder(tmp, artifact, progress),
                    info=details,
                )
                manifest.write(tmp / MANIFEST_NAME)
                self._move_into_place(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        logger.info("%s: imported %d files from %s (%s)", artifact, len(names), source, human_size(manifest.size_bytes))
        return manifest

    def recover(self) -> None:
        """Finish what a crashed prepare or import left: an artifact set aside during a replacement comes back
        if nothing took its name, build folders are removed (prepare and import_files do this first)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._clean_leftovers()

    def remove(self, artifact: str) -> None:
        """Delete an artifact: renamed to a build folder's name first (one step), then deleted, so that a crash
        part-way leaves a leftover that is cleaned up, never half an artifact under the name."""
        final = self.path(artifact)
        if not (final.exists() or final.is_symlink()):
            return
        # No lock: a rename is atomic, and a prepare running now only ever removes build folders.
        self._discard(final)

        # --- what the recipes add to the read-only store ---

    def _known_artifacts(self) -> list[str]:
        return list(self.recipes)

    def _recipe_version(self, artifact: str) -> int | None:
        recipe = self.recipes.get(artifact)
        return recipe.version if recipe else None

    def _stale(self, artifact: str, manifest: Manifest) -> str | None:
        recipe = self.recipes.get(artifact)
        return self._staleness(recipe, manifest) if recipe else None

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
            check_artifact_name(name)
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
        current_inputs = _input_checksums(recipe, missing_ok=True).items()
        changed = [name for name, digest in current_inputs if manifest.source.inputs.get(name) != digest]
        if changed:
            return f"{', '.join(changed)} changed"
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
                logger.info("%s: up to date (%s)", name, human_size(manifest.size_bytes))
                detail = _summary(recipe, manifest)
                return PrepareResult(
                    name,
                    PrepareAction.UP_TO_DATE,
                    detail,
                    time.monotonic() - start,
                    self.path(name),
                    manifest.size_bytes,
                )
        action = PrepareAction.REBUILT if existed else PrepareAction.BUILT
        logger.info("%s: building (%s)", name, reason)
        try:
            manifest = self._build(recipe, progress)
        except Exception as exc:  # one failing recipe must not stop the others; it is reported
            logger.error("%s: build failed: %s", name, exc, exc_info=not isinstance(exc, StoreError))
            return PrepareResult(name, PrepareAction.FAILED, str(exc), time.monotonic() - start, self.path(name))
        seconds = time.monotonic() - start
        logger.info("%s: %s in %.1f s (%s)", name, action, seconds, human_size(manifest.size_bytes))
        detail = "; ".join(part for part in (reason or "", _summary(recipe, manifest)) if part)
        return PrepareResult(name, action, detail, seconds, self.path(name), manifest.size_bytes)

    def _build(self, recipe: Recipe, progress: bool) -> Manifest:
        source_dir = package_dir(recipe.module, recipe.requirement) if recipe.module else None
        used: list[str] = []
        if source_dir is not None:
            for rel in recipe.sources:
                path = source_dir / rel
                if not path.exists():
                    raise RecipeError(f"{rel} is missing from {source_dir} (reinstall {recipe.requirement})")
                found = walk_files(path, hidden=False) if path.is_dir() else [path]
                used += [p.relative_to(source_dir).as_posix() for p in found]
        deps: dict[str, Path] = {}
        fingerprints: dict[str, str] = {}
        for dep in recipe.requires:
            dep_manifest = self._safe_manifest(dep)
            if dep_manifest is None or not self.verify(dep, deep=False).ok:
                raise RecipeError(f"required artifact '{dep}' is not prepared")
            deps[dep] = self.path(dep)
            fingerprints[dep] = dep_manifest.fingerprint()
        inputs = _input_checksums(recipe)

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
                    inputs=inputs,
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
        paths = [p for p in walk_files(folder) if p.relative_to(folder).as_posix() != MANIFEST_NAME]
        files: dict[str, FileEntry] = {}
        with progress_bar(sum(p.stat().st_size for p in paths), f"sha256 {name}", progress) as bar:
            for path in paths:
                files[path.relative_to(folder).as_posix()] = FileEntry(sha256_file(path, bar), path.stat().st_size)
        return files

    def _move_into_place(self, tmp: Path, final: Path) -> None:
        """Swap a finished build in, so that a crash at any point leaves the old or the new artifact under the name:
        the build's files are flushed to disk; the old artifact is renamed aside (ASIDE_PREFIX + name), the
        new one renamed into place, then the old one deleted. A crash between the two renames leaves the name
        empty and the old artifact aside: the next prepare, import or recover() puts it back."""
        fsync_tree(tmp)
        self._settle_aside(final.name)  # a crash of an earlier replacement, if any
        if final.exists() or final.is_symlink():
            aside = self.root / f"{ASIDE_PREFIX}{final.name}"
            os.replace(final, aside)
            os.replace(tmp, final)
            fsync_directory(self.root)
            self._discard(aside)
        else:
            os.replace(tmp, final)
            fsync_directory(self.root)

    def _settle_aside(self, name: str) -> None:
        """An artifact left aside by a crashed replacement: put back when the name is empty, else deleted."""
        aside = self.root / f"{ASIDE_PREFIX}{name}"
        if not (aside.exists() or aside.is_symlink()):
            return
        final = self.root / name
        if final.exists() or final.is_symlink():
            logger.info("%s: removing the previous artifact left aside by an interrupted replacement", name)
            self._discard(aside)
        else:
            logger.warning("%s: restoring the artifact an interrupted replacement had set aside", name)
            os.replace(aside, final)
            fsync_directory(self.root)

    def _discard(self, path: Path) -> None:
        """Delete a folder of the root: renamed to a build folder's name (removed as a leftover if a crash stops
        the deletion), then deleted."""
        trash = self.root / f"{TMP_PREFIX}removed-{secrets.token_hex(4)}"
        os.replace(path, trash)
        fsync_directory(self.root)
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink(missing_ok=True)

    def _clean_leftovers(self) -> None:
        """Settle artifacts set aside and remove build folders of an earlier prepare that was killed (only called
        under the lock)."""
        for path in sorted(self.root.glob(f"{ASIDE_PREFIX}*")):
            name = path.name.removeprefix(ASIDE_PREFIX)
            try:
                check_artifact_name(name)
            except ValueError:
                continue
            self._settle_aside(name)
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
