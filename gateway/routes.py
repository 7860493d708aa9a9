"""What the gateway does per public RPC: which service serves it, cacheability, the text `auto` reads."""

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
from aisemble.resolution import Rpc, auto_task
from aisemble.vision.v1 import vision_service_pb2  # noqa: F401

__all__ = ["PUBLIC_SERVICES", "ROUTES", "Route"]


@dataclass(frozen=True)
class Route:
    """The gateway's policy for one RPC.

    Whether the request names a model, and of which tasks, is the shared resolution table's
    (aisemble.resolution.RPC_TASKS); an RPC outside it is forwarded as it is.
    cacheable: whether a request's result is deterministic (then it may be answered from the cache).
    text: the request's text, for automatic selection (domain and language).
    zero_shot: whether the request classifies over caller-given labels (`auto` then picks an embedding model).
    default_model: used when the request leaves `model` empty (else empty is INVALID_ARGUMENT).
    """

    service: str
    cacheable: Callable[[Any], bool] | None = None
    text: Callable[[Any], str] | None = None
    output_tokens: Callable[[Any], int | None] | None = None
    zero_shot: Callable[[Any], bool] | None = None
    default_model: str = ""

    def task_for(self, rpc: str, request: Any) -> str:
        """The task `auto` picks a model of for this request."""
        return auto_task(rpc, zero_shot=bool(self.zero_shot and self.zero_shot(request)))


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


def _item_texts(request: Any) -> str:
    return "\n".join(item.text for item in request.items)


def _always(_request: Any) -> bool:
    return True


def _seeded(request: Any) -> bool:
    return request.HasField("seed")


def _zero_shot(request: Any) -> bool:
    return bool(request.candidate_labels)


_LLM = {
    "service": "llm",
    "text": _llm_text,
    "output_tokens": _llm_output_tokens,
    "cacheable": _llm_deterministic,
}

ROUTES: dict[str, Route] = {
    Rpc.COMPLETE: Route(**_LLM),  # type: ignore[arg-type]
    Rpc.STREAM_COMPLETE: Route(**_LLM),  # type: ignore[arg-type]
    Rpc.CHAT: Route(**_LLM),  # type: ignore[arg-type]
    Rpc.STREAM_CHAT: Route(**_LLM),  # type: ignore[arg-type]
    Rpc.CLASSIFY: Route("nlp", _always, _texts, zero_shot=_zero_shot),
    Rpc.EMBED: Route("nlp", _always, _texts),
    Rpc.DETECT_LANGUAGE: Route("nlp", _always, _texts, default_model="langid"),
    # Bulk streams: never cached (nothing replays a stream of millions of texts); `auto` reads the first message.
    Rpc.STREAM_EMBED: Route("nlp", text=_item_texts),
    Rpc.STREAM_CLASSIFY: Route("nlp", text=_item_texts, zero_shot=_zero_shot),
    Rpc.DETECT: Route("vision", _always),
    Rpc.STREAM_DETECT: Route("vision"),
    Rpc.RECOGNIZE: Route("vision", _always),
    Rpc.CLASSIFY_IMAGE: Route("vision", _always),
    Rpc.SEGMENT: Route("vision", _always),
    Rpc.GENERATE_IMAGE: Route("vision", _seeded, lambda r: str(r.prompt)),
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
