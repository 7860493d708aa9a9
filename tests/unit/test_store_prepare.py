"""The real model store: every default recipe prepares from its installed package and verifies."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import pytest

from aisemble.store.builder import PrepareAction, StoreBuilder
from aisemble.store.model_store import ModelStore
from aisemble.store.recipes import LANGID, MINILM_L6, RECIPES, SMOLLM2_135M_INSTRUCT


@pytest.fixture(scope="session")
def prepared(store: ModelStore) -> ModelStore:
    """The default store after prepare(): cheap when CI already built it (everything is up to date)."""
    builder = StoreBuilder(store.root, RECIPES)
    results = builder.prepare(progress=False)
    failed = {r.artifact: r.detail for r in results if r.action == PrepareAction.FAILED}
    assert not failed, failed
    return builder


@pytest.mark.parametrize("artifact", list(RECIPES))
def test_default_artifact_verifies_and_names_its_source(prepared: ModelStore, artifact: str) -> None:
    recipe = RECIPES[artifact]

    result = prepared.verify(artifact, deep=True)

    assert result.ok, result.problems
    manifest = prepared.manifest(artifact)
    assert manifest is not None
    assert manifest.recipe_version == recipe.version
    assert manifest.source.package == recipe.distribution
    if recipe.distribution is None:  # derived from other artifacts (e.g. the ONNX export of SmolLM2)
        assert set(manifest.source.artifacts) == set(recipe.requires)
    else:
        assert manifest.source.version == importlib.metadata.version(recipe.distribution)
        assert manifest.source.files
    assert manifest.info
    assert prepared.require(artifact) == prepared.path(artifact)


def test_onnx_files_open_in_onnx_runtime(prepared: ModelStore) -> None:
    import onnxruntime as ort

    opened = []
    for artifact in RECIPES:
        manifest = prepared.manifest(artifact)
        assert manifest is not None
        for rel in sorted(f for f in manifest.files if f.endswith(".onnx")):
            session = ort.InferenceSession(str(prepared.path(artifact) / rel), providers=["CPUExecutionProvider"])
            if "input_name" in manifest.info:
                assert session.get_inputs()[0].name == manifest.info["input_name"]
            opened.append(f"{artifact}/{rel}")
    assert f"{MINILM_L6}/model_int8.onnx" in opened
    assert "smollm2-135m-instruct-onnx/model.onnx" in opened
    assert "domain-classifier/model.onnx" in opened
    assert len(opened) == 10


def test_minilm_layout(prepared: ModelStore) -> None:
    folder = prepared.path(MINILM_L6)
    info = prepared.manifest(MINILM_L6).info  # type: ignore[union-attr]

    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    assert tokenizer["padding"]["strategy"] == "BatchLongest"
    assert tokenizer["truncation"]["max_length"] == 256
    assert (folder / "hf" / "model.safetensors").is_file()
    assert info["dims"] == 384
    assert info["onnx"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert info["onnx"]["min_cosine_vs_torch"] >= 0.9999
    assert not list(folder.glob("*.data"))  # one file, no external data


def test_smollm2_layout(prepared: ModelStore) -> None:
    folder = prepared.path(SMOLLM2_135M_INSTRUCT)
    info = prepared.manifest(SMOLLM2_135M_INSTRUCT).info  # type: ignore[union-attr]

    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (folder / "model.safetensors").stat().st_size > 500_000_000
    assert "<|im_start|>" in (folder / "chat_template.jinja").read_text()
    assert info["context_length"] == 8192
    assert info["eos_token_ids"] == [2]


def test_corrupted_copy_is_rebuilt(prepared: ModelStore, tmp_path: Path) -> None:
    copy = StoreBuilder(tmp_path / "models", recipes=RECIPES)
    shutil.copytree(prepared.path(LANGID), copy.path(LANGID))
    model = copy.path(LANGID) / "lid.176.ftz"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    assert not copy.verify(LANGID).ok

    [result] = copy.prepare([LANGID], progress=False)

    assert result.action == PrepareAction.REBUILT
    assert copy.verify(LANGID, deep=True).ok
    assert model.read_bytes() == (prepared.path(LANGID) / "lid.176.ftz").read_bytes()
