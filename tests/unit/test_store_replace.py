"""Replacing an artifact survives a crash at any step: the name then holds the old or the new artifact, complete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from aisemble.store.builder import TMP_PREFIX, PrepareAction, StoreBuilder
from aisemble.store.model_store import ASIDE_PREFIX, ModelStore
from aisemble.store.recipe import BuildContext, Recipe

NAME = "tiny"


class Crash(BaseException):
    """The process dies here (a BaseException: nothing in the store code catches it as a failure)."""


def _recipe(content: dict[str, str]) -> Recipe:
    def build(ctx: BuildContext) -> dict[str, Any]:
        (ctx.out_dir / "sub").mkdir()
        (ctx.out_dir / "weights.bin").write_text(content["text"] * 1000)
        (ctx.out_dir / "sub" / "labels.txt").write_text(content["text"])
        return {"content": content["text"]}

    return Recipe(NAME, 1, build)


def _content(store: ModelStore) -> str:
    """What the artifact under the name holds, after checking it completely against its manifest."""
    check = store.verify(NAME, deep=True)
    assert check.ok, check.problems
    manifest = store.manifest(NAME)
    assert manifest is not None and set(manifest.files) == {"weights.bin", "sub/labels.txt"}
    text = (store.path(NAME) / "sub" / "labels.txt").read_text()
    assert manifest.info.get("content", text) == text
    return text


def _crash_at(monkeypatch: pytest.MonkeyPatch, root: Path, step: int) -> list[str]:
    """Make the store's step-th rename of a top-level entry of root (or the deletion of the old one) crash."""
    steps: list[str] = []
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).parent == root:
            steps.append(f"rename {Path(src).name} -> {Path(dst).name}")
            if len(steps) == step:
                raise Crash(steps[-1])
        real_replace(src, dst)

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).parent == root and Path(path).name.startswith(TMP_PREFIX + "removed-"):
            steps.append(f"delete {Path(path).name}")
            if len(steps) == step:
                real_rmtree(Path(path) / "sub")  # part of the old artifact is gone already
                raise Crash(steps[-1])
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    return steps


def _replace_by_prepare(root: Path, content: dict[str, str]) -> None:
    content["text"] = "new"
    StoreBuilder(root, {NAME: _recipe(content)}).prepare([NAME], force=True, progress=False)


def _replace_by_import(root: Path, content: dict[str, str]) -> None:
    source = root.parent / "source"
    (source / "sub").mkdir(parents=True, exist_ok=True)
    (source / "weights.bin").write_text("new" * 1000)
    (source / "sub" / "labels.txt").write_text("new")
    StoreBuilder(root, {}).import_files(NAME, source, {"content": "new"}, replace=True)


#: The steps of a replacement: old aside, new into place, old renamed for deletion, old deleted.
_STEPS = (1, 2, 3, 4)


@pytest.mark.parametrize("replace", [_replace_by_prepare, _replace_by_import], ids=["prepare", "import"])
@pytest.mark.parametrize("step", _STEPS)
def test_a_crash_at_any_step_of_a_replacement_leaves_a_complete_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replace: Any, step: int
) -> None:
    root = tmp_path / "models"
    content = {"text": "old"}
    if replace is _replace_by_prepare:
        StoreBuilder(root, {NAME: _recipe(content)}).prepare([NAME], progress=False)
    else:
        source = tmp_path / "first"
        (source / "sub").mkdir(parents=True)
        (source / "weights.bin").write_text("old" * 1000)
        (source / "sub" / "labels.txt").write_text("old")
        StoreBuilder(root, {}).import_files(NAME, source, {"content": "old"})
    assert _content(ModelStore(root)) == "old"

    with monkeypatch.context() as patched:
        steps = _crash_at(patched, root, step)
        with pytest.raises(Crash):
            replace(root, content)
    assert len(steps) == step, steps
    # A reader meanwhile: the hidden aside copy and build folders are never artifacts.
    assert [s.artifact for s in ModelStore(root).status()] in ([NAME], [])
    if step == 2:  # between the two renames: the name is empty, the old artifact waits aside
        assert not (root / NAME).exists() and (root / f"{ASIDE_PREFIX}{NAME}").is_dir()

    # The next start of a writer (recover) or the next prepare settles it: old or new, complete.
    StoreBuilder(root, {}).recover()
    expected = "old" if step <= 2 else "new"
    assert _content(ModelStore(root)) == expected
    assert sorted(p.name for p in root.iterdir()) == [".lock", NAME]


def test_the_next_prepare_restores_an_artifact_set_aside(tmp_path: Path) -> None:
    root = tmp_path / "models"
    content = {"text": "old"}
    builder = StoreBuilder(root, {NAME: _recipe(content)})
    builder.prepare([NAME], progress=False)
    os.replace(root / NAME, root / f"{ASIDE_PREFIX}{NAME}")  # what a crash between the two renames leaves
    assert ModelStore(root).status() == []

    [result] = builder.prepare([NAME], progress=False)
    assert result.action == PrepareAction.UP_TO_DATE  # restored, not rebuilt
    assert _content(builder) == "old"


def test_an_import_without_replace_counts_an_artifact_set_aside(tmp_path: Path) -> None:
    root = tmp_path / "models"
    source = tmp_path / "source"
    source.mkdir()
    (source / "weights.bin").write_text("x")
    builder = StoreBuilder(root, {})
    builder.import_files(NAME, source)
    os.replace(root / NAME, root / f"{ASIDE_PREFIX}{NAME}")
    with pytest.raises(ValueError, match="already exists"):
        builder.import_files(NAME, source)
    assert builder.verify(NAME).ok


def test_remove_leaves_no_half_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "models"
    builder = StoreBuilder(root, {NAME: _recipe({"text": "old"})})
    builder.prepare([NAME], progress=False)
    with monkeypatch.context() as patched:
        _crash_at(patched, root, 2)  # the deletion after the rename to a build folder's name
        with pytest.raises(Crash):
            builder.remove(NAME)
    assert not (root / NAME).exists()
    builder.recover()
    assert sorted(p.name for p in root.iterdir()) == [".lock"]
    builder.remove(NAME)  # nothing there: nothing to do
