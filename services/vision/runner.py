"""Runs vision calls: picks the model, fills its defaults, admits, decodes and infers in worker threads."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from aisemble.errors import FieldViolation, InvalidArgumentError
from aisemble.hosting.admission import AdmissionControl
from aisemble.hosting.backend import RequestContext
from aisemble.hosting.host import ModelHost
from aisemble.inputs.images import ImageInput, ImageLimits, encode_png, load_image
from aisemble.resolution import Resolved, Rpc, auto_task, resolve_hosted
from aisemble.rpc.telemetry import span
from services.vision.answers import (
    ClassifyImageAnswer,
    DetectAnswer,
    FrameAnswer,
    GenerateImageAnswer,
    RecognizeAnswer,
    SegmentAnswer,
)
from services.vision.frames import Frame, run_frames
from services.vision.types import (
    ClassificationRequest,
    ClassificationResult,
    ClassifyImageCall,
    DetectCall,
    DetectionOverrides,
    DetectionParams,
    DetectionRequest,
    DetectionResult,
    GenerateImageCall,
    ImageGenerationResult,
    OcrRequest,
    OcrResult,
    RecognizeCall,
    SegmentationRequest,
    SegmentationResult,
    SegmentCall,
    StreamDetectCall,
)

__all__ = ["Resolved", "VisionLimits", "VisionRunner"]

T = TypeVar("T")

#: What to register for each task, for the error a caller gets when none is.
REGISTER_HINTS = {
    "object-detection": "task: object-detection with provider onnxruntime (a YOLOv8 .onnx without NMS) "
    "or ultralytics (a YOLO .pt file)",
    "ocr": "task: ocr, provider: rapidocr, model_path: a PP-OCR artifact (det/rec/cls ONNX + config.yaml)",
    "image-classification": "task: image-classification, provider: onnxruntime, model_path: a classifier .onnx",
    "image-segmentation": "task: image-segmentation, provider: ultralytics, model_path: a folder in the model "
    "store holding YOLO-seg weights (e.g. yolov8n-seg.pt)",
    "image-generation": "task: image-generation, provider: openai, model_id: the remote model (e.g. gpt-image-1), "
    "endpoint: an OpenAI-compatible base URL (optional), params.api_key_env: the variable holding the key",
}


@dataclass(frozen=True)
class VisionLimits:
    """Service-wide limits."""

    workers: int = 2  # inference threads shared by every model of the process
    max_waiting: int = 16  # unary requests waiting for a worker before RESOURCE_EXHAUSTED
    max_streams: int = 8  # concurrent StreamDetect calls
    max_pending_frames: int = 64  # the most a stream may ask for in max_pending_frames
    max_detections: int = 1000
    max_top_k: int = 1000


class VisionRunner:
    """The transport-neutral core of the vision service (the servicer only converts protobuf).

    Image decoding and inference both run in the worker threads, never on the event loop. Unary calls
    take an admission slot (bounded running + waiting, then RESOURCE_EXHAUSTED); a stream takes a
    stream slot for its lifetime and runs one frame at a time.
    """

    def __init__(self, host: ModelHost, limits: VisionLimits | None = None, images: ImageLimits | None = None) -> None:
        self.host = host
        self.limits = limits or VisionLimits()
        self.images = images if images is not None else ImageLimits.from_env()
        self.admission = AdmissionControl("vision requests", self.limits.workers, self.limits.max_waiting)
        self.streams = AdmissionControl("vision streams", self.limits.max_streams, 0)
        self._executor = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="vision-infer")

    # --- unary calls ---
    async def detect(self, call: DetectCall, ctx: RequestContext) -> DetectAnswer:
        """Decode and detect."""
        resolved = self._resolve(call.model, Rpc.DETECT)
        params = self._detection_params(resolved, call.overrides)
        result: DetectionResult = await self._unary(
            lambda: self._infer(resolved, DetectionRequest(self._load(call.image), params), ctx), ctx
        )
        return DetectAnswer(resolved, result)

    async def recognize(self, call: RecognizeCall, ctx: RequestContext) -> RecognizeAnswer:
        """Decode and read the text."""
        resolved = self._resolve(call.model, Rpc.RECOGNIZE)
        result: OcrResult = await self._unary(
            lambda: self._infer(resolved, OcrRequest(self._load(call.image)), ctx), ctx
        )
        return RecognizeAnswer(resolved, result)

    async def classify(self, call: ClassifyImageCall, ctx: RequestContext) -> ClassifyImageAnswer:
        """Decode and classify."""
        resolved = self._resolve(call.model, Rpc.CLASSIFY_IMAGE)
        result: ClassificationResult = await self._unary(
            lambda: self._infer(resolved, ClassificationRequest(self._load(call.image), call.top_k), ctx), ctx
        )
        return ClassifyImageAnswer(resolved, result)

    async def segment(self, call: SegmentCall, ctx: RequestContext) -> SegmentAnswer:
        """Decode, segment, and encode the masks as PNG (in the worker thread too)."""
        resolved = self._resolve(call.model, Rpc.SEGMENT)
        params = self._detection_params(resolved, call.overrides)

        def work() -> SegmentAnswer:
            result: SegmentationResult = self._infer(resolved, SegmentationRequest(self._load(call.image), params), ctx)
            pngs = tuple(encode_png(obj.mask.astype(np.uint8) * np.uint8(255)) for obj in result.objects)
            return SegmentAnswer(resolved, result, pngs)

        return await self._unary(work, ctx)

    async def generate(self, call: GenerateImageCall, ctx: RequestContext) -> GenerateImageAnswer:
        """Generate images (a remote call, in a worker thread like the rest)."""
        resolved = self._resolve(call.model, Rpc.GENERATE_IMAGE)
        result: ImageGenerationResult = await self._unary(lambda: self._infer(resolved, call.request, ctx), ctx)
        return GenerateImageAnswer(resolved, result)

    # --- streams ---
    async def stream_detect(self, call: StreamDetectCall, ctx: RequestContext) -> AsyncIterator[FrameAnswer]:
        """One answer per frame (see run_frames); holds a stream slot while it runs."""
        resolved = self._resolve(call.model, Rpc.STREAM_DETECT)
        params = self._detection_params(resolved, call.overrides)
        async with self.streams.slot():

            async def process(frame: Frame) -> DetectionResult:
                try:
                    with span("vision.frame", {"aisemble.frame.index": frame.index}):
                        return await self._in_thread(
                            lambda: self._infer(
                                resolved, DetectionRequest(self._load(frame.image, "frame"), params), ctx
                            ),
                            ctx,
                        )
                except InvalidArgumentError as exc:  # say which frame was bad
                    exc.message = f"frame_index {frame.index}: {exc.message}"
                    exc.metadata["frame_index"] = str(frame.index)
                    raise

            outcomes = run_frames(
                call.frames, process, call.policy, call.max_pending, max_unsent=max(16, call.max_pending)
            )
            async for outcome in outcomes:
                yield FrameAnswer(resolved, outcome)

    # --- model choice ---
    def _resolve(self, model: str, rpc: str) -> Resolved:
        """The named model (NOT_FOUND / FAILED_PRECONDITION for a wrong task), or for 'auto' the first ready one."""
        return resolve_hosted(self.host, model, rpc, service="vision", hint=REGISTER_HINTS[auto_task(rpc)])

    def _detection_params(self, resolved: Resolved, overrides: DetectionOverrides) -> DetectionParams:
        """The caller's thresholds over the model's defaults; INVALID_ARGUMENT for classes the model lacks."""
        defaults: DetectionParams = getattr(resolved.backend, "defaults", DetectionParams())
        names: Sequence[str] = getattr(resolved.backend, "class_names", ())
        class_ids: list[int] = []
        violations: list[FieldViolation] = []
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        for index, name in enumerate(overrides.class_names):
            if name in names:
                class_ids.append(names.index(name))
            else:
                violations.append(
                    FieldViolation(
                        f"class_names[{index}]",
                        f"'{name}' is not a class of '{resolved.spec.name}'; its classes: {shown}",
                    )
                )
        if violations:
            raise InvalidArgumentError(
                "; ".join(f"{v.field}: {v.description}" for v in violations),
                reason="UNKNOWN_CLASS",
                field_violations=violations,
            )
        return replace(
            defaults,
            score_threshold=defaults.score_threshold
            if overrides.score_threshold is None
            else overrides.score_threshold,
            iou_threshold=defaults.iou_threshold if overrides.iou_threshold is None else overrides.iou_threshold,
            max_detections=defaults.max_detections if overrides.max_detections is None else overrides.max_detections,
            class_ids=tuple(sorted(set(class_ids))),
        )

    # --- plumbing ---
    @staticmethod
    def _infer(resolved: Resolved, request: Any, ctx: RequestContext) -> Any:
        """The model's run, as an inference span."""
        with span("vision.inference", {"aisemble.model": resolved.spec.name}):
            return resolved.backend.run(request, ctx)

    def _load(self, image: ImageInput, field_path: str = "image") -> Any:
        with span("image.decode") as decoding:
            loaded = load_image(image, self.images, field_path)
            shape: tuple[int, ...] = getattr(loaded, "shape", ())
            if len(shape) >= 2:
                decoding.set_attributes({"aisemble.image.height": int(shape[0]), "aisemble.image.width": int(shape[1])})
            return loaded

    async def _unary(self, work: Callable[[], T], ctx: RequestContext) -> T:
        async with self.admission.slot():
            return await self._in_thread(work, ctx)

    async def _in_thread(self, work: Callable[[], T], ctx: RequestContext) -> T:
        loop = asyncio.get_running_loop()
        # The call's context goes with the work: its decode and inference spans are children of the call's.
        future = loop.run_in_executor(self._executor, contextvars.copy_context().run, work)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The caller went away: the backend sees the flag at its next check; keep the slot until the
            # thread is free, so that admission keeps counting the work that still runs.
            ctx.cancelled.set()
            await asyncio.wait([future])
            raise

    def close(self) -> None:
        """Release the worker threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
