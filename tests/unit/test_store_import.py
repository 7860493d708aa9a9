"""StoreBuilder.import_files: one's own files brought into the store as an artifact with a manifest, atomically."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aisemble.store.builder import TMP_PREFIX, StoreBuilder
from aisemble.store.manifest import MANIFEST_NAME
from aisemble.store.recipe import Recipe


@pytest.fixture
def own(tmp_path: Path) -> Path:
    """A user's folder of weights: two files, one in a sub-folder, and hidden things that are not imported."""
    folder = tmp_path / "own"
    (folder / "sub").mkdir(parents=True)
    (folder / "best.pt").write_bytes(b"weights")
    (folder / "sub" / "labels.txt").write_text("a\nb\n")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "junk").write_bytes(b"junk")
    (folder / ".DS_Store").write_bytes(b"x")
    return folder


def test_a_folder_is_imported_with_checksums_and_verifies(tmp_path, own):
    builder = StoreBuilder(tmp_path / "models", {})
    manifest = builder.import_files("my-yolo", own, {"pytorch": "best.pt", "imgsz": [640, 640]})
    folder = tmp_path / "models" / "my-yolo"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "best.pt",
        MANIFEST_NAME,
        "sub/labels.txt",
    ]
    assert manifest.files["best.pt"].sha256 == hashlib.sha256(b"weights").hexdigest()
    assert manifest.source.package is None and manifest.source.files == ["best.pt", "sub/labels.txt"]
    assert manifest.info == {"pytorch": "best.pt", "imgsz": [640, 640]}
    assert builder.manifest("my-yolo") == manifest
    assert builder.verify("my-yolo", deep=True).ok
    assert builder.require("my-yolo") == folder
    assert not list((tmp_path / "models").glob(f"{TMP_PREFIX}*"))


def test_one_file_is_imported_and_an_existing_artifact_is_replaced_only_when_asked(tmp_path, own):
    builder = StoreBuilder(tmp_path / "models", {})
    builder.import_files("one", own / "best.pt")
    assert set(builder.manifest("one").files) == {"best.pt"}  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="already exists"):
        builder.import_files("one", own / "sub" / "labels.txt")
    assert set(builder.manifest("one").files) == {"best.pt"}  # type: ignore[union-attr]
    builder.import_files("one", own / "sub" / "labels.txt", replace=True)
    assert set(builder.manifest("one").files) == {"labels.txt"}  # type: ignore[union-attr]
    assert not (tmp_path / "models" / "one" / "best.pt").exists()
    assert builder.verify("one").ok


def test_a_source_manifest_is_not_copied_but_replaced(tmp_path, own):
    (own / MANIFEST_NAME).write_text('{"forged": true}')
    builder = StoreBuilder(tmp_path / "models", {})
    manifest = builder.import_files("mine", own)
    assert MANIFEST_NAME not in manifest.files and builder.verify("mine").ok


def test_bad_imports_are_refused_and_leave_nothing(tmp_path, own):
    recipe = Recipe(name="shipped", version=1, build=lambda ctx: {})
    builder = StoreBuilder(tmp_path / "models", {"shipped": recipe})
    (tmp_path / "empty").mkdir()
    (tmp_path / "only-hidden").mkdir()
    (tmp_path / "only-hidden" / ".x").write_bytes(b"x")
    (own / MANIFEST_NAME).write_text("{}")
    cases = [
        ("Bad Name", own, "invalid artifact name"),
        ("../escape", own, "invalid artifact name"),
        ("shipped", own, "artifact of a recipe"),
        ("gone", tmp_path / "missing", "neither a folder nor a file"),
        ("manifest", own / MANIFEST_NAME, "neither a folder nor a file"),
        ("empty", tmp_path / "empty", "holds no files"),
        ("hidden", tmp_path / "only-hidden", "holds no files"),
    ]
    for name, source, words in cases:
        with pytest.raises(ValueError, match=words):
            builder.import_files(name, source)
    with pytest.raises(TypeError):
        builder.import_files("not-json", own, {"x": object()})
    root = tmp_path / "models"
    assert not root.exists() or [p.name for p in root.iterdir() if p.name != ".lock"] == []


def test_a_failed_copy_leaves_the_old_artifact_in_place(tmp_path, own, monkeypatch):
    builder = StoreBuilder(tmp_path / "models", {})
    builder.import_files("mine", own)
    before = builder.manifest("mine")

    def broken(src: Path, dst: Path, progress: bool = False) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("aisemble.store.builder.copy_file", broken)
    with pytest.raises(OSError, match="disk full"):
        builder.import_files("mine", own / "best.pt", replace=True)
    assert builder.manifest("mine") == before and builder.verify("mine").ok
    assert not list((tmp_path / "models").glob(f"{TMP_PREFIX}*"))
