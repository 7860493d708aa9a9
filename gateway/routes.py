"""What the gateway does per public RPC: which service serves it, the task of its model, cacheability, text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Importing the generated modules registers their descriptors, from which the gateway builds its handlers.
from aisemble.ensemble.v1 import ensemble_service_pb2  # noqa: F401
from aisemble.finetune.v1 import finetune_service_pb2  # noqa: F401
from aisemble.llm.v1 import llm_service_pb2  # noqa: F401
from aisemble.multimodal.v1 import multimodal_service_pb2  # noqa: F401
from aisemble.nlp.v1 import nlp_service_pb2  # noqa: F401
from aisemble.vision.v1 import vision_service_pb2  # noqa: F401

__all__ = ["PUBLIC_SERVICES", "ROUTES", "Route"]


@dataclass(frozen=True)
class Route:
    """The gateway's policy for one RPC.

    task: the task the request's model must serve (None: no model in the request, forward as is).
    cacheable: whether a request's result is deterministic (then it may be answered from the cache).
    text: the request's text, for automatic selection (domain and language).
    default_model: used when the request leaves `model` empty (else empty is INVALID_ARGUMENT).
    """

    service: str
    task: str | Callable[[Any], str] | None = None
    cacheable: Callable[[Any], bool] | None = None
    text: Callable[[Any], str] | None = None
    output_tokens: Callable[[Any], int | None] | None = None
    default_model: str = ""

    def task_for(self, request: Any) -> str | None:
        """The task of this request's model."""
        return self.task(request) if callable(self.task) else self.task


def _llm_deterministic(request: Any) -> bool:
    return (request.HasField("temperature") and request.temperature == 0.0) or request.HasField("seed")


def _llm_text(request: Any) -> str:
    if hasattr(request, "messages") and request.messages:
        return "\n".join(m.content for m in request.messages)
    return str(getattr(request, "prompt", ""))


def _llm_output_tokens(request: Any) -> int | None:
    return request.max_output_tokens if request.HasField("max_output_tokens") else None


def _texts(request: Any) -> str:
    return "\n".join(request.texts)


def _always(_request: Any) -> bool:
    return True


def _seeded(request: Any) -> bool:
    return request.HasField("seed")


def _classify_task(request: Any) -> str:
    # Zero-shot over caller-given labels runs on an embedding model; otherwise a trained classifier.
    return "embedding" if request.candidate_labels else "text-classification"


_LLM = {
    "service": "llm",
    "task": "text-generation",
    "text": _llm_text,
    "output_tokens": _llm_output_tokens,
    "cacheable": _llm_deterministic,
}

ROUTES: dict[str, Route] = {
    "/aisemble.llm.v1.LlmService/Complete": Route(**_LLM),  # type: ignore[arg-type]
    "/aisemble.llm.v1.LlmService/StreamComplete": Route(**_LLM),  # type: ignore[arg-type]
    "/aisemble.llm.v1.LlmService/Chat": Route(**_LLM),  # type: ignore[arg-type]
    "/aisemble.llm.v1.LlmService/StreamChat": Route(**_LLM),  # type: ignore[arg-type]
    "/aisemble.nlp.v1.NlpService/Classify": Route("nlp", _classify_task, _always, _texts),
    "/aisemble.nlp.v1.NlpService/Embed": Route("nlp", "embedding", _always, _texts),
    "/aisemble.nlp.v1.NlpService/DetectLanguage": Route(
        "nlp", "language-detection", _always, _texts, default_model="langid"
    ),
    "/aisemble.vision.v1.VisionService/Detect": Route("vision", "object-detection", _always),
    "/aisemble.vision.v1.VisionService/StreamDetect": Route("vision", "object-detection"),
    "/aisemble.vision.v1.VisionService/Recognize": Route("vision", "ocr", _always),
    "/aisemble.vision.v1.VisionService/ClassifyImage": Route("vision", "image-classification", _always),
    "/aisemble.vision.v1.VisionService/Segment": Route("vision", "image-segmentation", _always),
    "/aisemble.vision.v1.VisionService/GenerateImage": Route(
        "vision", "image-generation", _seeded, lambda r: str(r.prompt)
    ),
}

#: Public services the gateway serves, and the mesh service that answers RPCs without a model field.
PUBLIC_SERVICES = {
    "aisemble.llm.v1.LlmService": "llm",
    "aisemble.nlp.v1.NlpService": "nlp",
    "aisemble.vision.v1.VisionService": "vision",
    "aisemble.multimodal.v1.MultimodalService": "multimodal",
    "aisemble.ensemble.v1.EnsembleService": "ensemble",
    "aisemble.finetune.v1.FineTuneService": "finetune",
}
