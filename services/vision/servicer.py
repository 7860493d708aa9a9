"""The gRPC face of the vision service: validates and converts protobuf, the runner does the work."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from aisemble.common.v1 import common_pb2
from aisemble.errors import FieldViolation, InvalidArgumentError
from aisemble.inputs.images import ImageInput
from aisemble.rpc.selection import MODEL_TRAILER, selection_message
from aisemble.rpc.server import request_context
from aisemble.vision.v1 import vision_service_pb2 as pb
from aisemble.vision.v1 import vision_service_pb2_grpc
from services.vision.frames import BackpressurePolicy, Frame
from services.vision.runner import VisionRunner
from services.vision.types import (
    ClassifyImageCall,
    DetectCall,
    Detection,
    DetectionOverrides,
    DetectionResult,
    GenerateImageCall,
    ImageGenerationRequest,
    RecognizeCall,
    SegmentCall,
    StreamDetectCall,
)

__all__ = ["MODEL_TRAILER", "VisionServicer", "image_input"]

_POLICIES = {
    pb.BACKPRESSURE_POLICY_UNSPECIFIED: BackpressurePolicy.BLOCK,
    pb.BACKPRESSURE_POLICY_BLOCK: BackpressurePolicy.BLOCK,
    pb.BACKPRESSURE_POLICY_DROP_OLDEST: BackpressurePolicy.DROP_OLDEST,
    pb.BACKPRESSURE_POLICY_DROP_NEWEST: BackpressurePolicy.DROP_NEWEST,
}
_STREAM_SETTINGS = ("score_threshold", "iou_threshold", "max_detections", "max_pending_frames")


def _raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgumentError(
            "; ".join(f"{v.field}: {v.description}" for v in violations), field_violations=violations
        )


def image_input(image: common_pb2.Image, field_path: str, violations: list[FieldViolation]) -> ImageInput:
    """The image of a request as the domain sees it; a missing one is a field violation."""
    source = image.WhichOneof("source")
    if source == "data":
        return ImageInput(data=image.data)
    if source == "uri":
        return ImageInput(uri=image.uri)
    violations.append(FieldViolation(field_path, "is required: set data (a JPEG, PNG, WebP or BMP file) or uri"))
    return ImageInput()


def _detection(detection: Detection) -> pb.Detection:
    box = detection.box
    return pb.Detection(
        box=common_pb2.BoundingBox(x_min=box.x_min, y_min=box.y_min, x_max=box.x_max, y_max=box.y_max),
        class_id=detection.class_id,
        class_name=detection.class_name,
        score=detection.score,
    )


def _points(polygon: Any) -> list[common_pb2.Point]:
    return [common_pb2.Point(x=x, y=y) for x, y in polygon]


class VisionServicer(vision_service_pb2_grpc.VisionServiceServicer):
    """Detect / StreamDetect / Recognize / ClassifyImage / Segment / GenerateImage over one VisionRunner."""

    def __init__(self, runner: VisionRunner) -> None:
        self.runner = runner

    async def Detect(self, request: pb.DetectRequest, context: aio.ServicerContext) -> pb.DetectResponse:
        violations: list[FieldViolation] = []
        image = image_input(request.image, "image", violations)
        overrides = self._overrides(request, violations)
        _raise_if(violations)
        answer = await self.runner.detect(DetectCall(request.model, image, overrides), request_context(context))
        result = answer.result
        context.set_trailing_metadata(((MODEL_TRAILER, answer.resolved.spec.name),))
        return pb.DetectResponse(
            detections=[_detection(d) for d in result.detections],
            image_width=result.width,
            image_height=result.height,
            selection=selection_message(answer.resolved),
        )

    async def StreamDetect(
        self, request_iterator: AsyncIterator[pb.StreamDetectRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.StreamDetectResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        violations: list[FieldViolation] = []
        first_image = image_input(first.frame, "frame", violations)
        overrides = self._overrides(first, violations)
        limit = self.runner.limits.max_pending_frames
        max_pending = first.max_pending_frames if first.HasField("max_pending_frames") else 1
        if not 1 <= max_pending <= limit:
            violations.append(FieldViolation("max_pending_frames", f"must be between 1 and {limit}"))
        if first.backpressure_policy not in _POLICIES:
            violations.append(FieldViolation("backpressure_policy", "is not a known BackpressurePolicy"))
        _raise_if(violations)

        async def frames() -> AsyncIterator[Frame]:
            yield Frame(first.frame_index, first_image)
            async for message in request_iterator:
                problems: list[FieldViolation] = []
                image = image_input(message.frame, "frame", problems)
                self._check_same_settings(first, message, problems)
                if problems:
                    raise InvalidArgumentError(
                        f"frame_index {message.frame_index}: "
                        + "; ".join(f"{v.field}: {v.description}" for v in problems),
                        field_violations=problems,
                        metadata={"frame_index": str(message.frame_index)},
                    )
                yield Frame(message.frame_index, image)

        call = StreamDetectCall(first.model, overrides, frames(), _POLICIES[first.backpressure_policy], max_pending)
        first_response = True
        async for answer in self.runner.stream_detect(call, request_context(context)):
            outcome = answer.outcome
            response = pb.StreamDetectResponse(frame_index=outcome.index, dropped=outcome.dropped)
            result: DetectionResult | None = outcome.result
            if result is not None:
                response.detections.extend(_detection(d) for d in result.detections)
                response.image_width, response.image_height = result.width, result.height
            if first_response:
                response.selection.CopyFrom(selection_message(answer.resolved))
                first_response = False
            yield response

    async def Recognize(self, request: pb.RecognizeRequest, context: aio.ServicerContext) -> pb.RecognizeResponse:
        violations: list[FieldViolation] = []
        image = image_input(request.image, "image", violations)
        self._require_model(request.model, violations)
        _raise_if(violations)
        answer = await self.runner.recognize(RecognizeCall(request.model, image), request_context(context))
        result = answer.result
        context.set_trailing_metadata(((MODEL_TRAILER, answer.resolved.spec.name),))
        return pb.RecognizeResponse(
            lines=[
                pb.TextLine(text=line.text, score=line.score, polygon=_points(line.polygon)) for line in result.lines
            ],
            full_text="\n".join(line.text for line in result.lines),
            image_width=result.width,
            image_height=result.height,
            selection=selection_message(answer.resolved),
        )

    async def ClassifyImage(
        self, request: pb.ClassifyImageRequest, context: aio.ServicerContext
    ) -> pb.ClassifyImageResponse:
        violations: list[FieldViolation] = []
        image = image_input(request.image, "image", violations)
        self._require_model(request.model, violations)
        top_k = request.top_k if request.HasField("top_k") else 5
        limit = self.runner.limits.max_top_k
        if not 1 <= top_k <= limit:
            violations.append(FieldViolation("top_k", f"must be between 1 and {limit}"))
        _raise_if(violations)
        answer = await self.runner.classify(ClassifyImageCall(request.model, image, top_k), request_context(context))
        context.set_trailing_metadata(((MODEL_TRAILER, answer.resolved.spec.name),))
        return pb.ClassifyImageResponse(
            labels=[common_pb2.LabelScore(label=label, score=score) for label, score in answer.result.labels],
            selection=selection_message(answer.resolved),
        )

    async def Segment(self, request: pb.SegmentRequest, context: aio.ServicerContext) -> pb.SegmentResponse:
        violations: list[FieldViolation] = []
        image = image_input(request.image, "image", violations)
        overrides = self._overrides(request, violations)
        _raise_if(violations)
        answer = await self.runner.segment(SegmentCall(request.model, image, overrides), request_context(context))
        result = answer.result
        context.set_trailing_metadata(((MODEL_TRAILER, answer.resolved.spec.name),))
        return pb.SegmentResponse(
            objects=[
                pb.SegmentedObject(
                    detection=_detection(obj.detection),
                    mask=pb.Mask(width=result.width, height=result.height, png=png),
                    polygon=_points(obj.polygon),
                )
                for obj, png in zip(result.objects, answer.pngs, strict=True)
            ],
            image_width=result.width,
            image_height=result.height,
            selection=selection_message(answer.resolved),
        )

    async def GenerateImage(
        self, request: pb.GenerateImageRequest, context: aio.ServicerContext
    ) -> pb.GenerateImageResponse:
        violations: list[FieldViolation] = []
        self._require_model(request.model, violations)
        if not request.prompt.strip():
            violations.append(FieldViolation("prompt", "is required and must not be blank"))
        for name in ("width", "height", "n"):
            if getattr(request, name) < 0:
                violations.append(FieldViolation(name, "must be >= 0 (0: the model's default)"))
        _raise_if(violations)
        generation = ImageGenerationRequest(
            prompt=request.prompt,
            width=request.width,
            height=request.height,
            n=request.n or 1,
            seed=request.seed if request.HasField("seed") else None,
        )
        answer = await self.runner.generate(GenerateImageCall(request.model, generation), request_context(context))
        context.set_trailing_metadata(((MODEL_TRAILER, answer.resolved.spec.name),))
        return pb.GenerateImageResponse(
            images=[
                pb.GeneratedImage(data=image.data, mime_type=image.mime_type, revised_prompt=image.revised_prompt)
                for image in answer.result.images
            ],
            selection=selection_message(answer.resolved),
        )

    # --- conversions ---
    @staticmethod
    def _require_model(model: str, violations: list[FieldViolation]) -> None:
        if not model:
            violations.append(FieldViolation("model", "is required: a registry model name, or 'auto'"))

    def _overrides(self, request: Any, violations: list[FieldViolation]) -> DetectionOverrides:
        """Thresholds of a Detect / StreamDetect / Segment request, checked."""
        self._require_model(request.model, violations)

        def fraction(name: str) -> float | None:
            if not request.HasField(name):
                return None
            value = float(getattr(request, name))
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                violations.append(FieldViolation(name, f"must be between 0 and 1 (got {value})"))
            return value

        score, iou = fraction("score_threshold"), fraction("iou_threshold")
        max_detections = request.max_detections if request.HasField("max_detections") else None
        limit = self.runner.limits.max_detections
        if max_detections is not None and not 1 <= max_detections <= limit:
            violations.append(FieldViolation("max_detections", f"must be between 1 and {limit}"))
        return DetectionOverrides(score, iou, max_detections, tuple(request.class_names))

    @staticmethod
    def _check_same_settings(
        first: pb.StreamDetectRequest, later: pb.StreamDetectRequest, violations: list[FieldViolation]
    ) -> None:
        """Later messages of a stream leave the settings unset or repeat them."""
        message = "is a stream setting: leave it unset after the first message, or repeat the first value"
        if later.model and later.model != first.model:
            violations.append(FieldViolation("model", message))
        for name in _STREAM_SETTINGS:
            if later.HasField(name) and (not first.HasField(name) or getattr(later, name) != getattr(first, name)):
                violations.append(FieldViolation(name, message))
        if later.class_names and list(later.class_names) != list(first.class_names):
            violations.append(FieldViolation("class_names", message))
        if later.backpressure_policy and later.backpressure_policy != first.backpressure_policy:
            violations.append(FieldViolation("backpressure_policy", message))
