"""OCR with RapidOCR: PaddleOCR PP-OCRv4 detector, direction classifier and recogniser as ONNX from the store."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml

from aisemble.errors import FailedPreconditionError, ModelNotReadyError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.settings import ModelSettings, setting
from services.vision.backends.artifacts import model_files
from services.vision.types import OcrRequest, OcrResult, TextLine

__all__ = ["RapidOcrBackend", "RapidOcrSettings"]


@dataclass(frozen=True)
class RapidOcrSettings(ModelSettings):
    """RapidOCR's params: the files `det`, `rec`, `cls`, `config` (not set: the manifest's, else the folder's
    only `*_<role>_infer.onnx`, and config.yaml) and `text_score`."""

    det: str | None = setting(None)
    rec: str | None = setting(None)
    cls: str | None = setting(None)
    config: str | None = setting(None)
    text_score: float = setting(0.5, minimum=0, maximum=1)


def safe_read_yaml(path: str | Path) -> dict[str, Any]:
    """RapidOCR's config, read with yaml.safe_load: plain data only.

    RapidOCR's own reader (rapidocr_onnxruntime.utils.read_yaml) uses yaml.Loader, which builds any Python
    object a `!!python/...` tag names, and so runs code from the file; load() puts this one in its place.
    """
    try:
        with open(path, "rb") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise FailedPreconditionError(
            f"RapidOCR config {Path(path).name} is not plain YAML data (tags that build objects are refused): {exc}",
            reason="MODEL_CONFIG_INVALID",
        ) from None
    if not isinstance(data, dict):
        raise FailedPreconditionError(
            f"RapidOCR config {Path(path).name} must be a mapping of sections", reason="MODEL_CONFIG_INVALID"
        )
    return data


def _use_safe_yaml() -> None:
    """Make RapidOCR read its config with safe_read_yaml (main imported the unsafe reader by name)."""
    import rapidocr_onnxruntime.main
    import rapidocr_onnxruntime.utils

    rapidocr_onnxruntime.main.read_yaml = safe_read_yaml
    rapidocr_onnxruntime.utils.read_yaml = safe_read_yaml


class RapidOcrBackend(Backend):
    """RapidOCR with the three model files passed explicitly (it would otherwise look in its own package).

    params (all optional): det, rec, cls, config (file names in the artifact), text_score (drop lines
    scoring below it; RapidOCR's default 0.5). The config is read as plain YAML data (safe_read_yaml).
    """

    provider = "rapidocr"
    tasks = frozenset({"ocr"})
    #: This backend's settings in the registry entry's params, read once at load.
    settings_class: ClassVar[type[RapidOcrSettings]] = RapidOcrSettings

    def load(self) -> None:
        self.settings = settings = self.settings_class.for_serving(self.spec)  # refused: before any file is read
        from rapidocr_onnxruntime import RapidOCR

        _use_safe_yaml()
        files = model_files(self.spec, self.store)
        given = {"det": settings.det, "rec": settings.rec, "cls": settings.cls}
        paths = {
            role: files.pick(self.spec, role, given[role], role, suffix=f"_{role}_infer.onnx")
            for role in ("det", "rec", "cls")
        }
        config = files.pick(self.spec, "config", settings.config, "config", default="config.yaml")
        self.engine = RapidOCR(
            config_path=str(config),
            det_model_path=str(paths["det"]),
            rec_model_path=str(paths["rec"]),
            cls_model_path=str(paths["cls"]),
        )
        self.files = {role: path.name for role, path in paths.items()}
        self.text_score = settings.text_score
        self._lock = threading.Lock()
        self.engine(np.full((48, 160, 3), 255, np.uint8))  # warm-up

    def info(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.spec.name, "files": self.files}

    def run(self, request: OcrRequest, ctx: RequestContext) -> OcrResult:
        engine = self.engine
        if engine is None:  # unloaded (deregistered) while this request waited
            raise ModelNotReadyError(self.spec.name, "unloaded")
        ctx.check()
        image = request.image
        with self._lock:
            found, _elapsed = engine(image.bgr(), text_score=self.text_score)
        lines = [
            TextLine(text=str(text), score=float(score), polygon=tuple((float(x), float(y)) for x, y in box))
            for box, text, score in (found or [])
        ]
        return OcrResult(lines=lines, width=image.width, height=image.height)

    def cleanup(self) -> None:
        self.engine = None
