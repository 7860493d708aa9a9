"""Every built-in backend reads its registry params once, at load, as typed settings: a bad value is refused there,
before any file is read or endpoint called, naming `params.<key>` (FAILED_PRECONDITION, MODEL_CONFIG_INVALID)."""

from __future__ import annotations

import dataclasses
from importlib.metadata import entry_points
from typing import Any

import pytest

from aisemble.config.models import ModelSpec, load_models
from aisemble.errors import FailedPreconditionError
from aisemble.hosting.backend import Backend, resolve_backend_class
from aisemble.hosting.catalogue import ENTRY_POINT_GROUP
from aisemble.hosting.settings import ModelSettings
from aisemble.rpc.registry_messages import model_to_proto, spec_from_proto
from services.vision.backends.onnx_detector import OnnxDetectorSettings
from services.vision.backends.ultralytics_backend import UltralyticsSettings
from services.vision.types import DetectionParams

_SERVICE = {"text-generation": "llm", "image-generation": "vision", "ocr": "vision", "language-detection": "nlp"}


def _built_in_backends() -> list[type[Backend]]:
    found = {ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value.startswith("services.")}
    return sorted(found, key=lambda cls: cls.__name__)


def _spec(task: str, provider: str, **params: Any) -> ModelSpec:
    service = _SERVICE.get(task, "nlp" if task in ("embedding", "text-classification") else "vision")
    return ModelSpec(name="bad", task=task, provider=provider, service=service, model_path="x", params=params)


def test_every_built_in_backend_declares_a_settings_class_that_accepts_the_registry():
    backends = _built_in_backends()
    assert len(backends) >= 10
    for cls in backends:
        settings_class = getattr(cls, "settings_class", None)
        assert isinstance(settings_class, type) and issubclass(settings_class, ModelSettings), cls.__name__
        assert dataclasses.is_dataclass(settings_class), settings_class.__name__
        settings_class()  # every key has a default
    for spec in load_models().values():
        settings_class = resolve_backend_class(spec.task, spec.provider).settings_class  # type: ignore[attr-defined]
        # A model registered at run time comes through a protobuf Struct, whose numbers are all floats.
        assert settings_class.from_spec(spec_from_proto(model_to_proto(spec))) == settings_class.from_spec(spec)


REFUSED = [
    ("text-generation", "transformers", {"base_model_path": 5}, "must be a string (got 5)"),
    ("text-generation", "transformers", {"base_model_path": " "}, "must name the base artifact"),
    ("text-generation", "onnxruntime", {"intra_op_threads": -1}, "must be an integer >= 0 (got -1)"),
    ("text-generation", "onnxruntime", {"intra_op_spinning": "no"}, "must be true or false (got 'no')"),
    ("text-generation", "openai", {"timeout_s": 0}, "must be a number > 0 (got 0)"),
    ("text-generation", "openai", {"prompt_api": "chats"}, "must be one of 'completions', 'chat' (got 'chats')"),
    ("text-generation", "openai", {"api_key_env": "MY KEY"}, "must be an environment variable name"),
    ("embedding", "onnxruntime", {"onnx_file": 3}, "must be a string (got 3)"),
    ("text-classification", "onnxruntime", {"labels": ["spam", "spam"]}, "must be unique, non-empty strings"),
    ("text-classification", "onnxruntime", {"labels": "spam"}, "must be a non-empty list of strings"),
    ("language-detection", "fasttext", {"max_input_chars": 0}, "must be an integer >= 1 (got 0)"),
    ("object-detection", "onnxruntime", {"score_threshold": 1.5}, "must be a number between 0 and 1 (got 1.5)"),
    ("object-detection", "onnxruntime", {"iou_threshold": "0.5"}, "must be a number between 0 and 1 (got '0.5')"),
    ("object-detection", "onnxruntime", {"max_detections": 0}, "must be an integer >= 1 (got 0)"),
    ("object-detection", "onnxruntime", {"imgsz": [640]}, "must be an integer >= 1 or a list of 2 integers >= 1"),
    ("object-detection", "onnxruntime", {"class_names": "person"}, "must be a non-empty list of strings"),
    ("object-detection", "ultralytics", {"rect": "yes"}, "must be true or false (got 'yes')"),
    ("image-segmentation", "ultralytics", {"imgsz": 0}, "must be an integer >= 1 or a list of 2 integers >= 1"),
    ("ocr", "rapidocr", {"text_score": 2}, "must be a number between 0 and 1 (got 2)"),
    ("ocr", "rapidocr", {"det": ["a.onnx"]}, "must be a string (got ['a.onnx'])"),
    ("image-classification", "onnxruntime", {"mean": [0.5, 0.5]}, "must be a list of 3 numbers (got [0.5, 0.5])"),
    ("image-classification", "onnxruntime", {"std": [0.2, 0, 0.2]}, "must be a list of 3 numbers > 0"),
    ("image-classification", "onnxruntime", {"channel_order": "BRG"}, "must be BGR or RGB (got 'BRG')"),
    ("image-classification", "onnxruntime", {"output": "softmax"}, "must be one of 'auto', 'probabilities'"),
    ("image-classification", "onnxruntime", {"crop": 0}, "must be an integer >= 1 (got 0)"),
    ("image-generation", "openai", {"sizes": ["big"]}, "each size must be WIDTHxHEIGHT"),
    ("image-generation", "openai", {"max_images": 0}, "must be an integer >= 1 (got 0)"),
    ("image-generation", "openai", {"response_format": "url"}, "must be one of 'b64_json', '' (got 'url')"),
    ("image-generation", "openai", {"timeout_s": -1}, "must be a number > 0 (got -1)"),
]


@pytest.mark.parametrize(("task", "provider", "params", "words"), REFUSED)
def test_a_bad_value_is_refused_at_load_naming_its_key(task, provider, params, words):
    # No store and no API key: a load that read params after files or the key would fail for that instead.
    backend = resolve_backend_class(task, provider)(_spec(task, provider, **params), None)
    with pytest.raises(FailedPreconditionError) as caught:
        backend.load()
    error = caught.value
    (key,) = params
    assert error.reason == "MODEL_CONFIG_INVALID", str(error)
    assert error.metadata["fields"] == f"params.{key}" and error.metadata["model"] == "bad"
    assert f"params.{key}: {words}" in str(error)


def test_every_bad_value_of_a_backend_is_named_at_once():
    params = {"score_threshold": -0.1, "max_detections": 2.5, "intra_op_threads": "2", "onnx": None, "other": 1}
    backend = resolve_backend_class("object-detection", "onnxruntime")(_spec("object-detection", "onnxruntime"))
    backend.spec = dataclasses.replace(backend.spec, params=params)
    with pytest.raises(FailedPreconditionError) as caught:
        backend.load()
    assert str(caught.value) == (
        "model 'bad' cannot be served: params.intra_op_threads: must be an integer >= 0 (got '2'); "
        "params.score_threshold: must be a number between 0 and 1 (got -0.1); "
        "params.max_detections: must be an integer >= 1 (got 2.5) (configs/models.yaml)"
    )


def test_detection_settings_keep_the_defaults_and_either_form_of_imgsz():
    assert OnnxDetectorSettings().defaults() == DetectionParams()
    spec = _spec("object-detection", "onnxruntime", imgsz=[480, 640], class_names=["fall"], iou_threshold=0.45)
    settings = OnnxDetectorSettings.from_spec(spec)
    assert settings.imgsz == (480, 640) and settings.class_names == ("fall",)
    assert settings.defaults() == DetectionParams(iou_threshold=0.45)
    assert UltralyticsSettings.from_spec(_spec("object-detection", "ultralytics", imgsz=320.0)).imgsz == 320
