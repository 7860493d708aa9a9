"""YOLOv8 object detection on ONNX Runtime alone: our own letterbox, decode and NMS in numpy."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aisemble.errors import FailedPreconditionError, ModelNotReadyError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.onnx_runtime import OnnxRuntimeSettings, inference_session
from aisemble.hosting.settings import setting
from services.vision.backends.artifacts import model_files
from services.vision.backends.detection_settings import DetectionSettings
from services.vision.types import Box, Detection, DetectionRequest, DetectionResult
from services.vision.yolo import decode_yolov8, letterbox, to_input_tensor

__all__ = ["OnnxDetectorBackend", "OnnxDetectorSettings"]


@dataclass(frozen=True)
class OnnxDetectorSettings(DetectionSettings, OnnxRuntimeSettings):
    """A YOLOv8 ONNX detector's params: the detection defaults and imgsz, ONNX Runtime's threads, `onnx` (not
    set: the manifest's, else the folder's only .onnx) and `class_names` (not set: the manifest's, else the
    graph's metadata)."""

    onnx: str | None = setting(None)
    class_names: tuple[str, ...] | None = setting(None, min_items=1)


def _class_names(info: dict[str, Any], metadata: dict[str, str], given: tuple[str, ...] | None) -> list[str]:
    names = given or info.get("class_names")
    if names:
        return [str(n) for n in names]
    raw = metadata.get("names")  # Ultralytics writes "{0: 'person', 1: ...}"
    if raw:
        parsed = ast.literal_eval(raw)
        return [str(parsed[i]) for i in sorted(parsed)]
    return []


class OnnxDetectorBackend(Backend):
    """An Ultralytics YOLOv8 detector exported to ONNX without NMS in the graph (output: 4 + classes, anchors).

    params (all optional): onnx (file name), imgsz (input side for dynamic graphs), class_names,
    score_threshold / iou_threshold / max_detections (defaults 0.25 / 0.7 / 300, as Ultralytics),
    intra_op_threads.
    """

    provider = "onnxruntime"
    tasks = frozenset({"object-detection"})
    #: This backend's settings in the registry entry's params, read once at load.
    settings_class: ClassVar[type[OnnxDetectorSettings]] = OnnxDetectorSettings

    def load(self) -> None:
        self.settings = settings = self.settings_class.for_serving(self.spec)  # refused: before any file is read
        files = model_files(self.spec, self.store)
        path = files.pick(self.spec, "onnx", settings.onnx, "onnx", default="", suffix=".onnx")
        self.session = inference_session(path, self.spec.device, settings)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.class_names = _class_names(files.info, metadata, settings.class_names)
        self.input_size = self._input_size(model_input.shape, files.info)
        self.defaults = settings.defaults()
        channels = self.session.get_outputs()[0].shape[1]
        if not self.class_names and isinstance(channels, int):
            self.class_names = [str(i) for i in range(channels - 4)]
        if isinstance(channels, int) and channels != 4 + len(self.class_names):
            raise FailedPreconditionError(
                f"model '{self.spec.name}': the graph outputs {channels} channels per anchor, expected 4 + "
                f"{len(self.class_names)} classes (is NMS inside the graph? export with nms=False)",
                reason="MODEL_SHAPE_MISMATCH",
            )
        self.session.run(None, {self.input_name: np.zeros((1, 3, *self.input_size), np.float32)})  # warm-up

    def _input_size(self, shape: list[Any], info: dict[str, Any]) -> tuple[int, int]:
        if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
            return int(shape[2]), int(shape[3])
        size = self.settings.imgsz or info.get("imgsz") or info.get("input_size") or 640
        if isinstance(size, list | tuple):
            return int(size[0]), int(size[1])
        return int(size), int(size)

    def info(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.spec.name,
            "classes": self.class_names,
            "input_size": list(self.input_size),
            "execution_providers": self.session.get_providers(),
        }

    def run(self, request: DetectionRequest, ctx: RequestContext) -> DetectionResult:
        session = self.session
        if session is None:  # unloaded (deregistered) while this request waited
            raise ModelNotReadyError(self.spec.name, "unloaded")
        ctx.check()
        image = request.image
        padded, box = letterbox(image.rgb, self.input_size)
        (output,) = session.run(None, {self.input_name: to_input_tensor(padded)})[:1]
        params = request.params
        xyxy, scores, labels = decode_yolov8(
            output, box, params.score_threshold, params.iou_threshold, params.max_detections, params.class_ids
        )
        detections = [
            Detection(
                box=Box(*(float(v) for v in xyxy[i])),
                class_id=int(labels[i]),
                class_name=self.class_names[int(labels[i])] if int(labels[i]) < len(self.class_names) else "",
                score=float(scores[i]),
            )
            for i in range(len(scores))
        ]
        return DetectionResult(detections=detections, width=image.width, height=image.height)

    def cleanup(self) -> None:
        self.session = None
