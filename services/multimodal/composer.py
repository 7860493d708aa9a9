"""Analyze as a composition: vision and NLP calls in parallel, failed parts collected, mentions matched."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from aisemble.common.v1 import common_pb2
from aisemble.errors import AisembleError
from aisemble.interceptors import REQUEST_ID_KEY, STATUS_DETAILS_KEY
from aisemble.nlp.v1 import nlp_service_pb2 as nlp_pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.server import channel_options
from aisemble.vision.v1 import vision_service_pb2 as vision_pb
from aisemble.vision.v1 import vision_service_pb2_grpc
from services.multimodal.matching import Match, find_mentions, phrases, terms_from

__all__ = [
    "PARTS",
    "AllPartsFailedError",
    "Analysis",
    "AnalysisRequest",
    "MultimodalComposer",
    "MultimodalLimits",
    "PartError",
    "Upstreams",
]

log = logging.getLogger(__name__)

#: The parts of an analysis, named as AnalyzeResponse names them in part_failures.
DETECTION, OCR, LANGUAGE, EMBEDDING = "detection", "ocr", "language", "embedding"
PARTS = (DETECTION, OCR, LANGUAGE, EMBEDDING)
AUTO = "auto"


@dataclass(frozen=True)
class MultimodalLimits:
    """Service-wide limits and matching settings."""

    max_text_chars: int = 10_000
    default_timeout_s: float = 30.0  # for calls that come without a deadline
    mention_threshold: float = 0.7
    max_message_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class AnalysisRequest:
    """A checked Analyze request; the image is passed to the vision service as it came."""

    image: common_pb2.Image
    text: str
    detection_model: str = AUTO
    ocr_model: str = AUTO
    embedding_model: str = AUTO
    score_threshold: float | None = None
    include_embedding: bool = False


@dataclass(frozen=True)
class PartError:
    """How one part failed: its status code (a google.rpc.Code value), reason and message."""

    part: str
    code: int
    reason: str
    message: str


@dataclass
class Analysis:
    """Each part's response (None when it failed), the mentions, and the failures."""

    detection: vision_pb.DetectResponse | None = None
    ocr: vision_pb.RecognizeResponse | None = None
    language: nlp_pb.DetectLanguageResponse | None = None
    embedding: nlp_pb.EmbedResponse | None = None
    mentions: list[Match] = field(default_factory=list)
    failures: list[PartError] = field(default_factory=list)


class AllPartsFailedError(AisembleError):
    """Every part failed: the call fails with their common code (UNAVAILABLE when they differ)."""

    default_reason = "ALL_PARTS_FAILED"

    def __init__(self, failures: Sequence[PartError]) -> None:
        codes = {f.code for f in failures}
        code = codes.pop() if len(codes) == 1 else grpc.StatusCode.UNAVAILABLE.value[0]
        detail = "; ".join(f"{f.part}: {f.message}" for f in failures)
        super().__init__(
            f"every part of the analysis failed: {detail}",
            metadata={f.part: f.reason or str(f.code) for f in failures},
            retry_after_s=1.0 if code == grpc.StatusCode.UNAVAILABLE.value[0] else None,
        )
        self.code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNAVAILABLE)


class Upstreams:
    """The channels to the vision and NLP services (or a gateway serving both), opened on first use.

    Channels are made lazily because a grpc.aio channel belongs to the event loop that makes it,
    and the server is built before its loop runs.
    """

    def __init__(self, vision_target: str, nlp_target: str, max_message_bytes: int = 16 * 1024 * 1024) -> None:
        self.vision_target = vision_target
        self.nlp_target = nlp_target
        self._options = channel_options(max_message_bytes)
        self._channels: dict[str, aio.Channel] = {}

    def _channel(self, target: str) -> aio.Channel:
        if target not in self._channels:
            self._channels[target] = aio.insecure_channel(target, options=self._options)
        return self._channels[target]

    def vision(self) -> vision_service_pb2_grpc.VisionServiceStub:
        """A stub on the vision channel."""
        return vision_service_pb2_grpc.VisionServiceStub(self._channel(self.vision_target))

    def nlp(self) -> nlp_service_pb2_grpc.NlpServiceStub:
        """A stub on the NLP channel."""
        return nlp_service_pb2_grpc.NlpServiceStub(self._channel(self.nlp_target))

    async def close(self) -> None:
        """Close the channels."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()


def _part_error(part: str, exc: BaseException) -> PartError:
    if isinstance(exc, aio.AioRpcError):
        reason = ""
        raw = dict(exc.trailing_metadata() or ()).get(STATUS_DETAILS_KEY)
        if isinstance(raw, bytes):
            for detail in status_pb2.Status.FromString(raw).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
        return PartError(part, exc.code().value[0], reason, exc.details() or exc.code().name)
    if isinstance(exc, asyncio.CancelledError):
        return PartError(part, grpc.StatusCode.CANCELLED.value[0], "CANCELLED", "the call was cancelled")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return PartError(part, grpc.StatusCode.DEADLINE_EXCEEDED.value[0], "DEADLINE_EXCEEDED", "timed out")
    log.error("multimodal part %s failed unexpectedly", part, exc_info=exc)
    return PartError(part, grpc.StatusCode.INTERNAL.value[0], "INTERNAL", f"{part} failed: {type(exc).__name__}")


class MultimodalComposer:
    """The transport-neutral core of Analyze (it speaks gRPC only as a client of the other services)."""

    def __init__(self, upstreams: Upstreams, limits: MultimodalLimits | None = None) -> None:
        self.upstreams = upstreams
        self.limits = limits or MultimodalLimits()

    async def analyze(self, request: AnalysisRequest, deadline: float | None = None, request_id: str = "") -> Analysis:
        """Run the four parts in parallel, then match mentions; AllPartsFailedError when nothing succeeded.

        deadline: time.monotonic() by which everything must be done (each call gets what is left of it).
        """
        deadline = deadline if deadline is not None else time.monotonic() + self.limits.default_timeout_s
        metadata = ((REQUEST_ID_KEY, request_id),) if request_id else None

        def left() -> float:
            return max(0.001, deadline - time.monotonic())

        vision, nlp = self.upstreams.vision(), self.upstreams.nlp()
        detect = vision_pb.DetectRequest(model=request.detection_model, image=request.image)
        if request.score_threshold is not None:
            detect.score_threshold = request.score_threshold
        calls: dict[str, Awaitable[Any]] = {
            DETECTION: vision.Detect(detect, timeout=left(), metadata=metadata),
            OCR: vision.Recognize(
                vision_pb.RecognizeRequest(model=request.ocr_model, image=request.image),
                timeout=left(),
                metadata=metadata,
            ),
            LANGUAGE: nlp.DetectLanguage(
                nlp_pb.DetectLanguageRequest(texts=[request.text], model=AUTO), timeout=left(), metadata=metadata
            ),
            EMBEDDING: nlp.Embed(
                nlp_pb.EmbedRequest(model=request.embedding_model, texts=[request.text]),
                timeout=left(),
                metadata=metadata,
            ),
        }
        results = await asyncio.gather(*calls.values(), return_exceptions=True)
        analysis = Analysis()
        for part, result in zip(calls, results, strict=True):
            if isinstance(result, BaseException):
                analysis.failures.append(_part_error(part, result))
            else:
                setattr(analysis, part, result)
        if len(analysis.failures) == len(PARTS):
            raise AllPartsFailedError(analysis.failures)
        analysis.mentions = await self._mentions(request.text, analysis, nlp, left, metadata)
        if analysis.embedding is not None and not request.include_embedding:
            for result in analysis.embedding.embeddings:
                del result.values[:]
        return analysis

    async def _mentions(
        self,
        text: str,
        analysis: Analysis,
        nlp: nlp_service_pb2_grpc.NlpServiceStub,
        left: Any,
        metadata: Any,
    ) -> list[Match]:
        class_names = [d.class_name for d in analysis.detection.detections] if analysis.detection else []
        lines = [line.text for line in analysis.ocr.lines] if analysis.ocr else []
        terms = terms_from(class_names, lines)
        if not terms:
            return []
        vectors: dict[str, np.ndarray] = {}
        embedding = analysis.embedding
        if embedding is not None:
            # Every term and phrase in one call to the model that embedded the text; on failure, words only.
            keys = list(dict.fromkeys([t.key for t in terms] + [c.key for c in phrases(text)]))
            try:
                reply = await nlp.Embed(
                    nlp_pb.EmbedRequest(model=embedding.selection.model or AUTO, texts=keys, normalize=True),
                    timeout=left(),
                    metadata=metadata,
                )
                vectors = {key: np.asarray(e.values, np.float32) for key, e in zip(keys, reply.embeddings, strict=True)}
            except aio.AioRpcError as exc:
                log.warning("mention embeddings failed (%s); matching words only", exc.code().name)

        def embed(texts: list[str]) -> np.ndarray:
            return np.stack([vectors[t] for t in texts])

        return find_mentions(text, terms, embed if vectors else None, self.limits.mention_threshold)
