"""configs/*.yaml are validated by one schema; a bad file is refused with a message naming file, model and field."""

from pathlib import Path

import pytest

from aisemble.config.mesh import load_mesh
from aisemble.config.models import load_models, model_from_mapping, model_to_mapping
from aisemble.config.schema import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_are_valid():
    models = load_models()
    assert {"smollm2-135m", "minilm-l6", "langid", "yolov8-fall", "ppocr-v4", "doc-orientation"} <= set(models)
    assert models["smollm2-135m"].service == "llm"
    assert models["minilm-l6"].service == "nlp"
    mesh = load_mesh()
    assert mesh.gateway.addresses == ("127.0.0.1:50051",) or mesh.gateway.addresses


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ("task: flying\n    provider: transformers", "task", "must be one of"),
        ("task: text-generation\n    provider: llama-cpp", "provider", "unknown provider 'llama-cpp'"),
        ("provider: transformers", "task", "is required"),
        ("task: text-generation\n    provider: transformers\n    model_path: ../../etc", "model_path", "without '..'"),
        ("task: text-generation\n    provider: transformers\n    max_tokens: -5", "max_tokens", "integer >= 1"),
        ("task: text-generation\n    provider: transformers\n    colour: blue", "colour", "not a known field"),
        ("task: text-generation\n    provider: transformers\n    cost_per_token: .nan", "cost_per_token", "finite"),
    ],
)
def test_bad_model_entry_names_file_model_and_field(tmp_path, entry, field, words):
    path = _write(tmp_path, f"models:\n  my-model:\n    {entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_models(path)
    message = str(caught.value)
    assert str(path) in message and "'my-model'" in message and f"field '{field}'" in message and words in message
    assert caught.value.field_violations[0].field == field


def test_not_yaml_and_wrong_shape_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_models(_write(tmp_path, "models: [unclosed\n"))
    with pytest.raises(ConfigError, match="'models' mapping"):
        load_models(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_models(tmp_path / "missing.yaml")


def test_bad_model_name_is_refused():
    with pytest.raises(ConfigError, match="must match"):
        model_from_mapping("Bad Name!", {"task": "embedding", "provider": "onnxruntime"})


def test_mapping_round_trip():
    spec = model_from_mapping("m", {"task": "embedding", "provider": "onnxruntime", "tags": ["a"], "max_tokens": 9})
    assert model_from_mapping("m", model_to_mapping(spec)) == spec


def test_bad_mesh_is_refused(tmp_path):
    path = tmp_path / "mesh.yaml"
    path.write_text("gateway: {address: 127.0.0.1:50051}\nservices:\n  llm: {addresses: [nowhere]}\n")
    with pytest.raises(ConfigError, match=r"service 'llm': field 'addresses': 'nowhere' is not host:port"):
        load_mesh(path)
    path.write_text("gateway: {address: 127.0.0.1:50051}\nservices:\n  teleport: {address: 127.0.0.1:1}\n")
    with pytest.raises(ConfigError, match="service 'teleport'"):
        load_mesh(path)
