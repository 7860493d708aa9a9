"""OCR with RapidOCR: PaddleOCR PP-OCRv4 detector, direction classifier and recogniser as ONNX from the store."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from aisemble.errors import ModelNotReadyError
from aisemble.hosting.backend import Backend, RequestContext
from services.vision.backends.artifacts import model_files
from services.vision.types import OcrRequest, OcrResult, TextLine

__all__ = ["RapidOcrBackend"]


class RapidOcrBackend(Backend):
    """RapidOCR with the three model files passed explicitly (it would otherwise look in its own package).

    params (all optional): det, rec, cls, config (file names in the artifact), text_score (drop lines
    scoring below it; RapidOCR's default 0.5).
    """

    provider = "rapidocr"
    tasks = frozenset({"ocr"})

    def load(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        files = model_files(self.spec, self.store)
        paths = {
            role: files.pick(self.spec, role, role, suffix=f"_{role}_infer.onnx") for role in ("det", "rec", "cls")
        }
        config = files.pick(self.spec, "config", "config", default="config.yaml")
        self.engine = RapidOCR(
            config_path=str(config),
            det_model_path=str(paths["det"]),
            rec_model_path=str(paths["rec"]),
            cls_model_path=str(paths["cls"]),
        )
        self.files = {role: path.name for role, path in paths.items()}
        self.text_score = float(self.spec.params.get("text_score", 0.5))
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
