"""Detection and instance segmentation with Ultralytics YOLO weights (.pt), offline, never plotting."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aisemble.environment import apply_offline_defaults
from aisemble.errors import FailedPreconditionError, InvalidArgumentError, ModelNotReadyError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.settings import setting
from services.vision.backends.artifacts import model_files
from services.vision.backends.detection_settings import DetectionSettings
from services.vision.types import (
    Box,
    Detection,
    DetectionParams,
    DetectionRequest,
    DetectionResult,
    SegmentationRequest,
    SegmentationResult,
    SegmentedObject,
)

__all__ = ["UltralyticsBackend", "UltralyticsSettings"]

_TASKS = {"object-detection": ("detect", "segment"), "image-segmentation": ("segment",)}


@dataclass(frozen=True)
class UltralyticsSettings(DetectionSettings):
    """A YOLO .pt model's params: the detection defaults and imgsz, `weights` (not set: the manifest's, else
    the folder's only .pt) and `rect`."""

    weights: str | None = setting(None)
    rect: bool = setting(False)


def _restricted_loading() -> None:
    """Turn on Ultralytics' restricted checkpoint loading: torch.load(weights_only=True) with an allow-list of its
    own model classes, a second wall behind the manifest check. ULTRALYTICS_SAFE_LOAD sets this flag only when
    Ultralytics is first imported, so the module's flag is set here (a no-op on a torch too old for it)."""
    import ultralytics.nn.tasks

    ultralytics.nn.tasks.SAFE_LOAD = True


class UltralyticsBackend(Backend):
    """A YOLO .pt file run by Ultralytics (detect weights for object-detection, -seg weights for either task).

    The .pt must be a file of a store artifact with a manifest (built by `aisemble models prepare`, or one's
    own weights brought in with `aisemble models import`) whose sha256 it matches when it is loaded; it is then
    loaded with Ultralytics' restricted (weights_only) loader.

    YOLO_OFFLINE and YOLO_AUTOINSTALL=false are set before Ultralytics is imported, so it neither looks
    anything up nor installs packages; results are never plotted (plotting downloads a font).
    One prediction at a time per model: Ultralytics predictors are not thread-safe.

    params (all optional): weights (file name), imgsz, score_threshold / iou_threshold / max_detections,
    rect (default false: letterbox to the full imgsz square, as an exported ONNX graph with a fixed input
    sees it, so that this backend and the ONNX one give the same boxes; true: Ultralytics' minimal
    padding to a multiple of the stride, faster on non-square images but not the same input).
    """

    provider = "ultralytics"
    tasks = frozenset({"object-detection", "image-segmentation"})
    #: This backend's settings in the registry entry's params, read once at load.
    settings_class: ClassVar[type[UltralyticsSettings]] = UltralyticsSettings

    def load(self) -> None:
        self.settings = settings = self.settings_class.for_serving(self.spec)  # refused: before any file is read
        apply_offline_defaults()
        from ultralytics import YOLO

        _restricted_loading()
        files = model_files(self.spec, self.store)
        path = files.pick(self.spec, "weights", settings.weights, "pytorch", default="", suffix=".pt")
        # A .pt file is a pickle: loading it runs whatever it holds. Only a file the store built or imported,
        # listed in its artifact's manifest with the checksum it has right now, is loaded.
        self.model: Any = YOLO(str(files.verified(self.spec, path)))
        self.weights = path
        self.yolo_task = str(self.model.task)
        if self.yolo_task not in _TASKS[self.spec.task]:
            raise FailedPreconditionError(
                f"model '{self.spec.name}': {path.name} holds a '{self.yolo_task}' model; task {self.spec.task} "
                f"needs {' or '.join(_TASKS[self.spec.task])} weights (e.g. yolov8n-seg.pt for segmentation)",
                reason="MODEL_WRONG_TASK",
                metadata={"model": self.spec.name},
            )
        names = self.model.names
        self.class_names = [str(names[i]) for i in sorted(names)]
        imgsz = settings.imgsz or files.info.get("imgsz")
        self.imgsz = list(imgsz) if isinstance(imgsz, tuple) else imgsz or None
        self.device = {"cpu": "cpu", "cuda": "cuda:0"}.get(self.spec.device)
        self.rect = settings.rect
        self.defaults = settings.defaults()
        self._lock = threading.Lock()
        self._predict(np.zeros((64, 64, 3), np.uint8), self.defaults, masks=False)  # warm-up builds the predictor

    def info(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.spec.name,
            "weights": self.weights.name,
            "yolo_task": self.yolo_task,
            "rect": self.rect,
            "classes": self.class_names,
        }

    def _predict(self, bgr: np.ndarray, params: DetectionParams, masks: bool) -> Any:
        arguments: dict[str, Any] = {
            "conf": params.score_threshold,
            "iou": params.iou_threshold,
            "max_det": params.max_detections,
            "classes": list(params.class_ids) or None,
            "device": self.device,
            "verbose": False,
            "save": False,
            "retina_masks": masks,  # masks at the original image size
            "rect": self.rect,
        }
        if self.imgsz:
            arguments["imgsz"] = self.imgsz
        with self._lock:
            model = self.model
            if model is None:  # unloaded (deregistered) while this request waited
                raise ModelNotReadyError(self.spec.name, "unloaded")
            return model.predict(bgr, **arguments)[0]

    def _detections(self, result: Any) -> list[Detection]:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return []
        xyxy = boxes.xyxy.cpu().numpy()
        scores = boxes.conf.cpu().numpy()
        labels = boxes.cls.cpu().numpy().astype(int)
        return [
            Detection(
                box=Box(*(float(v) for v in xyxy[i])),
                class_id=int(labels[i]),
                class_name=self.class_names[labels[i]],
                score=float(scores[i]),
            )
            for i in range(len(scores))
        ]

    def run(self, request: Any, ctx: RequestContext) -> DetectionResult | SegmentationResult:
        ctx.check()
        image = request.image
        if isinstance(request, DetectionRequest):
            result = self._predict(image.bgr(), request.params, masks=False)
            return DetectionResult(self._detections(result), width=image.width, height=image.height)
        if isinstance(request, SegmentationRequest):
            if self.yolo_task != "segment":
                raise InvalidArgumentError(f"model '{self.spec.name}' detects but does not segment")
            result = self._predict(image.bgr(), request.params, masks=True)
            detections = self._detections(result)
            objects: list[SegmentedObject] = []
            if detections and result.masks is not None:
                data = result.masks.data.cpu().numpy() > 0.5
                outlines = result.masks.xy
                for i, detection in enumerate(detections):
                    mask = data[i]
                    if mask.shape != (image.height, image.width):  # retina masks should already match
                        import cv2

                        mask = cv2.resize(mask.astype(np.uint8), (image.width, image.height)) > 0
                    polygon = tuple((float(x), float(y)) for x, y in outlines[i])
                    objects.append(SegmentedObject(detection=detection, mask=mask, polygon=polygon))
            return SegmentationResult(objects=objects, width=image.width, height=image.height)
        raise TypeError(f"UltralyticsBackend cannot run {type(request).__name__}")

    def cleanup(self) -> None:
        self.model = None
