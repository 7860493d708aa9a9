"""Runs vision requests: picks the model, fills its defaults, admits, decodes and infers in worker threads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from aisemble.errors import (
    FieldViolation,
    InvalidArgumentError,
)
from aisemble.hosting.admission import AdmissionControl
from aisemble.hosting.backend import RequestContext
from aisemble.hosting.host import ModelHost
from aisemble.inputs.images import ImageInput, ImageLimits, encode_png, load_image
from aisemble.resolution import Resolved, auto_task, resolve_hosted
from services.vision.frames import BackpressurePolicy, Frame, FrameOutcome, run_frames
from services.vision.types import (
    ClassificationRequest,
    ClassificationResult,
    DetectionParams,
    DetectionRequest,
    DetectionResult,
    ImageGenerationRequest,
    ImageGenerationResult,
    OcrRequest,
    OcrResult,
    SegmentationRequest,
    SegmentationResult,
)

__all__ = ["DetectionOverrides", "EncodedMasks", "Resolved", "VisionLimits", "VisionRunner"]

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


@dataclass(frozen=True)
class DetectionOverrides:
    """What the caller set; None means 'the model's default'."""

    score_threshold: float | None = None
    iou_threshold: float | None = None
    max_detections: int | None = None
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class EncodedMasks:
    """A segmentation with every mask already encoded as an 8-bit PNG (255 inside, 0 outside)."""

    result: SegmentationResult
    pngs: list[bytes]


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

    # --- model choice ---
    def resolve(self, model: str, rpc: str) -> Resolved:
        """The named model (NOT_FOUND / FAILED_PRECONDITION for a wrong task), or for 'auto' the first ready one."""
        return resolve_hosted(self.host, model, rpc, service="vision", hint=REGISTER_HINTS[auto_task(rpc)])

    def detection_params(self, resolved: Resolved, overrides: DetectionOverrides) -> DetectionParams:
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

    # --- unary calls ---
    async def detect(
        self, resolved: Resolved, image: ImageInput, params: DetectionParams, ctx: RequestContext
    ) -> DetectionResult:
        """Decode and detect."""
        return await self._unary(lambda: resolved.backend.run(DetectionRequest(self._load(image), params), ctx), ctx)

    async def recognize(self, resolved: Resolved, image: ImageInput, ctx: RequestContext) -> OcrResult:
        """Decode and read the text."""
        return await self._unary(lambda: resolved.backend.run(OcrRequest(self._load(image)), ctx), ctx)

    async def classify(
        self, resolved: Resolved, image: ImageInput, top_k: int, ctx: RequestContext
    ) -> ClassificationResult:
        """Decode and classify."""
        return await self._unary(
            lambda: resolved.backend.run(ClassificationRequest(self._load(image), top_k), ctx), ctx
        )

    async def segment(
        self, resolved: Resolved, image: ImageInput, params: DetectionParams, ctx: RequestContext
    ) -> EncodedMasks:
        """Decode, segment, and encode the masks as PNG (in the worker thread too)."""

        def work() -> EncodedMasks:
            result: SegmentationResult = resolved.backend.run(SegmentationRequest(self._load(image), params), ctx)
            pngs = [encode_png(obj.mask.astype(np.uint8) * np.uint8(255)) for obj in result.objects]
            return EncodedMasks(result, pngs)

        return await self._unary(work, ctx)

    async def generate(
        self, resolved: Resolved, request: ImageGenerationRequest, ctx: RequestContext
    ) -> ImageGenerationResult:
        """Generate images (a remote call, in a worker thread like the rest)."""
        return await self._unary(lambda: resolved.backend.run(request, ctx), ctx)

    # --- streams ---
    async def stream_detect(
        self,
        resolved: Resolved,
        params: DetectionParams,
        frames: AsyncIterator[Frame],
        policy: BackpressurePolicy,
        max_pending: int,
        ctx: RequestContext,
    ) -> AsyncIterator[FrameOutcome[DetectionResult]]:
        """One outcome per frame (see run_frames); holds a stream slot while it runs."""
        async with self.streams.slot():

            async def process(frame: Frame) -> DetectionResult:
                try:
                    return await self._in_thread(
                        lambda: resolved.backend.run(DetectionRequest(self._load(frame.image, "frame"), params), ctx),
                        ctx,
                    )
                except InvalidArgumentError as exc:  # say which frame was bad
                    exc.message = f"frame_index {frame.index}: {exc.message}"
                    exc.metadata["frame_index"] = str(frame.index)
                    raise

            async for outcome in run_frames(frames, process, policy, max_pending, max_unsent=max(16, max_pending)):
                yield outcome

    # --- plumbing ---
    def _load(self, image: ImageInput, field_path: str = "image") -> Any:
        return load_image(image, self.images, field_path)

    async def _unary(self, work: Callable[[], T], ctx: RequestContext) -> T:
        async with self.admission.slot():
            return await self._in_thread(work, ctx)

    async def _in_thread(self, work: Callable[[], T], ctx: RequestContext) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, work)
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
