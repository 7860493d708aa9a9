"""Analyze as a composition: vision and NLP calls in parallel, failed parts collected, mentions matched."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from grpc import aio

from aisemble.common.v1 import common_pb2
from aisemble.errors import AisembleError, Code
from aisemble.nlp.v1 import nlp_service_pb2 as nlp_pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.resolution import AUTO
from aisemble.rpc.client import (
    DEFAULT_MAX_MESSAGE_BYTES,
    PLAINTEXT,
    CallFailure,
    Deadline,
    LazyChannel,
    Peer,
    call_failure,
)
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


@dataclass(frozen=True)
class MultimodalLimits:
    """Service-wide limits and matching settings."""

    max_text_chars: int = 10_000
    default_timeout_s: float = 30.0  # for calls that come without a deadline
    mention_threshold: float = 0.7
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


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
        code = Code.of(codes.pop()) if len(codes) == 1 else Code.UNAVAILABLE
        detail = "; ".join(f"{f.part}: {f.message}" for f in failures)
        super().__init__(
            f"every part of the analysis failed: {detail}",
            metadata={f.part: f.reason or str(f.code) for f in failures},
            retry_after_s=1.0 if code == Code.UNAVAILABLE else None,
        )
        self.code = code


class Upstreams:
    """Where the composer sends its calls: the public VisionService and NlpService, through the gateway.

    Both composers (this one and the ensemble service) call the other areas through the gateway, so
    that every part is resolved (names and `auto`), routed over replicas, cached and measured like
    any other call. A deployment may point an area straight at its service (the same contract).
    """

    def __init__(
        self,
        vision_target: str,
        nlp_target: str,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        peer: Peer = PLAINTEXT,
    ) -> None:
        self._vision = LazyChannel(vision_target, max_message_bytes, peer=peer)
        same = nlp_target == vision_target
        self._nlp = self._vision if same else LazyChannel(nlp_target, max_message_bytes, peer=peer)

    def vision(self) -> vision_service_pb2_grpc.VisionServiceStub:
        """A stub on the vision channel."""
        return vision_service_pb2_grpc.VisionServiceStub(self._vision.channel)

    def nlp(self) -> nlp_service_pb2_grpc.NlpServiceStub:
        """A stub on the NLP channel."""
        return nlp_service_pb2_grpc.NlpServiceStub(self._nlp.channel)

    async def close(self) -> None:
        """Close the channels."""
        await self._vision.close()
        await self._nlp.close()


def _part_error(part: str, exc: BaseException) -> PartError:
    failure = call_failure(exc)
    if failure is None:
        log.error("multimodal part %s failed unexpectedly", part, exc_info=exc)
        failure = CallFailure(Code.INTERNAL, "INTERNAL", f"{part} failed: {type(exc).__name__}")
    return PartError(part, failure.code, failure.reason, failure.message)


class MultimodalComposer:
    """The transport-neutral core of Analyze (it speaks gRPC only as a client of the other services)."""

    def __init__(self, upstreams: Upstreams, limits: MultimodalLimits | None = None) -> None:
        self.upstreams = upstreams
        self.limits = limits or MultimodalLimits()

    async def analyze(
        self, request: AnalysisRequest, deadline: Deadline | None = None, metadata: Sequence[tuple[str, str]] = ()
    ) -> Analysis:
        """Run the four parts in parallel, then match mentions; AllPartsFailedError when nothing succeeded.

        deadline: by when everything must be done (each call gets what is left of it); metadata: the caller's,
        passed on to every call.
        """
        if deadline is None or deadline.at is None:
            deadline = Deadline.after(self.limits.default_timeout_s)
        left = deadline.timeout

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
        left: Callable[[], float | None],
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
