"""Model resolution, written once for the gateway and every runner: `auto`, the tasks each RPC accepts, the errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aisemble.config.models import ModelSpec
from aisemble.errors import FailedPreconditionError, ModelNotReadyError, NotFoundError
from aisemble.rpc.calls import note_model

if TYPE_CHECKING:
    from aisemble.hosting.backend import Backend
    from aisemble.hosting.host import ModelHost

__all__ = [
    "AUTO",
    "RPC_TASKS",
    "ModelWrongTaskError",
    "NoModelForTaskError",
    "Resolved",
    "Rpc",
    "auto_task",
    "check_task",
    "resolve_hosted",
    "rpc_name",
]

#: The model name that asks for automatic selection (the gateway's selector; a service's default).
AUTO = "auto"


class Rpc:
    """The full method paths of the RPCs whose request names a model."""

    COMPLETE = "/aisemble.llm.v1.LlmService/Complete"
    STREAM_COMPLETE = "/aisemble.llm.v1.LlmService/StreamComplete"
    CHAT = "/aisemble.llm.v1.LlmService/Chat"
    STREAM_CHAT = "/aisemble.llm.v1.LlmService/StreamChat"
    EMBED = "/aisemble.nlp.v1.NlpService/Embed"
    CLASSIFY = "/aisemble.nlp.v1.NlpService/Classify"
    DETECT_LANGUAGE = "/aisemble.nlp.v1.NlpService/DetectLanguage"
    STREAM_EMBED = "/aisemble.nlp.v1.NlpService/StreamEmbed"
    STREAM_CLASSIFY = "/aisemble.nlp.v1.NlpService/StreamClassify"
    DETECT = "/aisemble.vision.v1.VisionService/Detect"
    STREAM_DETECT = "/aisemble.vision.v1.VisionService/StreamDetect"
    RECOGNIZE = "/aisemble.vision.v1.VisionService/Recognize"
    CLASSIFY_IMAGE = "/aisemble.vision.v1.VisionService/ClassifyImage"
    SEGMENT = "/aisemble.vision.v1.VisionService/Segment"
    GENERATE_IMAGE = "/aisemble.vision.v1.VisionService/GenerateImage"


#: The tasks a model named in each RPC must serve; the first is the task `auto` chooses among
#: (Classify: a trained text-classification model, or an embedding model classifying zero-shot).
RPC_TASKS: Mapping[str, tuple[str, ...]] = {
    Rpc.COMPLETE: ("text-generation",),
    Rpc.STREAM_COMPLETE: ("text-generation",),
    Rpc.CHAT: ("text-generation",),
    Rpc.STREAM_CHAT: ("text-generation",),
    Rpc.EMBED: ("embedding",),
    Rpc.CLASSIFY: ("text-classification", "embedding"),
    Rpc.DETECT_LANGUAGE: ("language-detection",),
    Rpc.STREAM_EMBED: ("embedding",),
    Rpc.STREAM_CLASSIFY: ("text-classification", "embedding"),
    Rpc.DETECT: ("object-detection",),
    Rpc.STREAM_DETECT: ("object-detection",),
    Rpc.RECOGNIZE: ("ocr",),
    Rpc.CLASSIFY_IMAGE: ("image-classification",),
    Rpc.SEGMENT: ("image-segmentation",),
    Rpc.GENERATE_IMAGE: ("image-generation",),
}


def rpc_name(rpc: str) -> str:
    """The method name of a path ("/aisemble.nlp.v1.NlpService/Embed" -> "Embed"), as errors spell it."""
    return rpc.rsplit("/", 1)[-1]


def auto_task(rpc: str, zero_shot: bool = False) -> str:
    """The task `auto` picks a model of: the RPC's first task (Classify with candidate labels: embedding)."""
    if rpc in (Rpc.CLASSIFY, Rpc.STREAM_CLASSIFY) and zero_shot:
        return "embedding"
    return RPC_TASKS[rpc][0]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


class ModelWrongTaskError(FailedPreconditionError):
    """The named model serves another task than the RPC needs."""

    default_reason = "MODEL_WRONG_TASK"

    def __init__(self, spec: ModelSpec, rpc: str, alternatives: Sequence[str] = ()) -> None:
        needed = RPC_TASKS[rpc]
        need = " or ".join(f"{_article(t)} {t} model" for t in needed)
        hint = f" ({', '.join(alternatives)})" if alternatives else ""
        super().__init__(
            f"model '{spec.name}' is {_article(spec.task)} {spec.task} model; {rpc_name(rpc)} needs {need}{hint}",
            metadata={"model": spec.name, "task": spec.task, "rpc": rpc_name(rpc), "needed_task": needed[0]},
        )


class NoModelForTaskError(FailedPreconditionError):
    """`auto` found no model of the task at all (a hint may say what to register)."""

    default_reason = "NO_MODEL_FOR_TASK"

    def __init__(self, task: str, where: str, hint: str = "") -> None:
        super().__init__(
            f"no {task} model is registered {where}"
            + (f": register one in configs/models.yaml ({hint})" if hint else ""),
            metadata={"task": task},
        )


def check_task(spec: ModelSpec, rpc: str, alternatives: Sequence[str] = ()) -> None:
    """ModelWrongTaskError (MODEL_WRONG_TASK) unless the model serves one of the RPC's tasks."""
    if spec.task not in RPC_TASKS[rpc]:
        raise ModelWrongTaskError(spec, rpc, alternatives)


@dataclass(frozen=True)
class Resolved:
    """The model that serves a request and why."""

    spec: ModelSpec
    backend: Backend
    automatic: bool
    reason: str


def _of_task(host: ModelHost, task: str) -> list[str]:
    return [name for name, hosted in host.models.items() if hosted.spec.task == task]


def resolve_hosted(
    host: ModelHost,
    model: str,
    rpc: str,
    *,
    service: str,
    zero_shot: bool = False,
    preferred: Mapping[str, str] | None = None,
    hint: str = "",
) -> Resolved:
    """The model of this process that serves a request: by name (checked against the RPC's tasks), or for `auto`
    (or an empty name) the service's default: `preferred[task]` when ready, else the first ready model of the task.

    Errors: MODEL_NOT_FOUND (unknown name), MODEL_WRONG_TASK, MODEL_NOT_READY (UNAVAILABLE, retry),
    NO_MODEL_FOR_TASK (`auto` and none is hosted). `hint` says what to register when none is.
    """
    task = auto_task(rpc, zero_shot)
    if model not in ("", AUTO):
        if hint and model not in host.models and not _of_task(host, task):
            raise NotFoundError(
                f"model '{model}' is not registered, and no {task} model is: register one in configs/models.yaml "
                f"({hint})",
                reason="MODEL_NOT_FOUND",
                metadata={"model": model, "task": task},
            )
        spec = host.spec(model)  # MODEL_NOT_FOUND for an unknown name
        if spec.task not in RPC_TASKS[rpc]:  # the hosted alternatives are listed only when it fails
            raise ModelWrongTaskError(spec, rpc, _of_task(host, task))
        spec, backend = host.get(model)  # MODEL_NOT_READY while it loads
        note_model(spec.name)
        return Resolved(spec, backend, automatic=False, reason="requested by name")
    names = _of_task(host, task)
    first = (preferred or {}).get(task)
    if first in names:
        names.remove(first)
        names.insert(0, first)
    if not names:
        raise NoModelForTaskError(task, f"on this {service} service", hint)
    not_ready: ModelNotReadyError | None = None
    for name in names:
        try:
            spec, backend = host.get(name)
        except ModelNotReadyError as exc:
            not_ready = not_ready or exc
            continue
        note_model(spec.name)
        return Resolved(
            spec, backend, automatic=True, reason=f"the {service} service's default {task} model (the gateway selects)"
        )
    assert not_ready is not None
    raise not_ready
