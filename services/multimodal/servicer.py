"""The gRPC face of the multimodal service: validates Analyze; the composer does the work."""

from __future__ import annotations

import math

from grpc import aio

from aisemble.common.v1 import common_pb2
from aisemble.errors import FieldViolation, InvalidArgumentError
from aisemble.multimodal.v1 import multimodal_service_pb2 as pb
from aisemble.multimodal.v1 import multimodal_service_pb2_grpc
from aisemble.resolution import AUTO
from aisemble.rpc.client import Deadline, forwardable_metadata
from services.multimodal.composer import AnalysisRequest, MultimodalComposer
from services.multimodal.matching import DETECTION

__all__ = ["MultimodalServicer"]


class MultimodalServicer(multimodal_service_pb2_grpc.MultimodalServiceServicer):
    """Analyze over one MultimodalComposer."""

    def __init__(self, composer: MultimodalComposer) -> None:
        self.composer = composer

    async def Analyze(self, request: pb.AnalyzeRequest, context: aio.ServicerContext) -> pb.AnalyzeResponse:
        analysis_request = self._checked(request)
        metadata = [(k, v) for k, v in forwardable_metadata(context) if isinstance(v, str)]
        analysis = await self.composer.analyze(analysis_request, Deadline.of(context), metadata)
        response = pb.AnalyzeResponse(
            mentions=[
                pb.Mention(
                    term=m.term.text,
                    source=pb.MENTION_SOURCE_DETECTION if m.term.source == DETECTION else pb.MENTION_SOURCE_OCR,
                    matched_text=m.matched_text,
                    score=m.score,
                    item_indices=list(m.term.items),
                )
                for m in analysis.mentions
            ],
            part_failures=[
                common_pb2.PartFailure(part=f.part, code=f.code, reason=f.reason, message=f.message)
                for f in analysis.failures
            ],
        )
        if analysis.detection is not None:
            response.detection.CopyFrom(analysis.detection)
        if analysis.ocr is not None:
            response.ocr.CopyFrom(analysis.ocr)
        if analysis.language is not None:
            response.text_analysis.language.CopyFrom(analysis.language)
        if analysis.embedding is not None:
            response.text_analysis.embedding.CopyFrom(analysis.embedding)
        return response

    def _checked(self, request: pb.AnalyzeRequest) -> AnalysisRequest:
        limits = self.composer.limits
        violations: list[FieldViolation] = []
        if request.image.WhichOneof("source") is None:
            violations.append(FieldViolation("image", "is required: set data (a JPEG, PNG, WebP or BMP file) or uri"))
        if not request.text.strip():
            violations.append(FieldViolation("text", "is required and must not be blank"))
        elif len(request.text) > limits.max_text_chars:
            violations.append(
                FieldViolation("text", f"is {len(request.text)} characters; the limit is {limits.max_text_chars}")
            )
        score = request.score_threshold if request.HasField("score_threshold") else None
        if score is not None and not (math.isfinite(score) and 0.0 <= score <= 1.0):
            violations.append(FieldViolation("score_threshold", f"must be between 0 and 1 (got {score})"))
        if violations:
            raise InvalidArgumentError(
                "; ".join(f"{v.field}: {v.description}" for v in violations), field_violations=violations
            )
        return AnalysisRequest(
            image=request.image,
            text=request.text,
            detection_model=request.detection_model or AUTO,
            ocr_model=request.ocr_model or AUTO,
            embedding_model=request.embedding_model or AUTO,
            score_threshold=score,
            include_embedding=request.include_embedding,
        )
