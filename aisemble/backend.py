"""The backend interface every model runtime implements, and discovery of built-in and plugin backends."""

from __future__ import annotations

import abc
import importlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from aisemble.errors import CancelledError, DeadlineExceededError, FailedPreconditionError

if TYPE_CHECKING:
    from aisemble.config import ModelSpec
    from aisemble.store import ModelStore

__all__ = [
    "BUILTIN_BACKENDS",
    "ENTRY_POINT_GROUP",
    "Backend",
    "RequestContext",
    "create_backend",
    "known_providers",
    "resolve_backend_class",
]

#: Third-party packages add backends under this entry-point group: `name = "module:Class"`,
#: where the name is the provider used in configs/models.yaml and Class subclasses Backend.
ENTRY_POINT_GROUP = "aisemble.backends"

#: (task, provider) -> "module:Class" for the backends that ship with Ai-semble. Imported lazily,
#: so a service only imports the runtimes (torch, onnxruntime, ...) of the models it hosts.
BUILTIN_BACKENDS: dict[tuple[str, str], str] = {
    ("text-generation", "transformers"): "services.llm.backends.transformers_backend:TransformersBackend",
    ("text-generation", "onnxruntime"): "services.llm.backends.onnx_backend:OnnxLlmBackend",
    ("text-generation", "openai"): "services.llm.backends.openai_backend:OpenAIBackend",
    ("embedding", "onnxruntime"): "services.nlp.backends.onnx_encoder:OnnxEncoderBackend",
    ("text-classification", "onnxruntime"): "services.nlp.backends.onnx_encoder:OnnxEncoderBackend",
    ("language-detection", "fasttext"): "services.nlp.backends.fasttext_backend:FastTextBackend",
    ("object-detection", "ultralytics"): "services.vision.backends.ultralytics_backend:UltralyticsBackend",
    ("object-detection", "onnxruntime"): "services.vision.backends.onnx_detector:OnnxDetectorBackend",
    ("image-segmentation", "ultralytics"): "services.vision.backends.ultralytics_backend:UltralyticsBackend",
    ("ocr", "rapidocr"): "services.vision.backends.rapidocr_backend:RapidOcrBackend",
    ("image-classification", "onnxruntime"): "services.vision.backends.onnx_classifier:OnnxImageClassifierBackend",
    ("image-generation", "openai"): "services.vision.backends.openai_images:OpenAIImagesBackend",
}


@dataclass
class RequestContext:
    """What a backend needs to know about the call it serves: cancellation and the deadline.

    Backends poll `check()` between steps (a decoding step, a batch); the runner sets `cancelled`
    when the client goes away, so compute stops within one step.
    """

    request_id: str = ""
    deadline: float | None = None  # time.monotonic() value
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def time_remaining(self) -> float | None:
        """Seconds left before the deadline, or None when there is none."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def is_done(self) -> bool:
        """True when the work should stop: cancelled or past the deadline."""
        return self.cancelled.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline)

    def check(self) -> None:
        """Raise CancelledError / DeadlineExceededError when the work should stop."""
        if self.cancelled.is_set():
            raise CancelledError("the request was cancelled")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceededError("the deadline passed before the model finished")


class Backend(abc.ABC):
    """One way of running one model (transformers, onnxruntime, ultralytics, openai, a plugin...).

    Life cycle: `load()` once (blocking, run in a thread), then `run()` / `stream()` from worker
    threads, `info()` at any time, `cleanup()` once at unload. A backend never imports grpc: it
    takes and returns the task's domain types and raises `aisemble.errors` exceptions.
    """

    #: The provider name used in configs/models.yaml.
    provider: ClassVar[str] = ""
    #: The tasks this backend can serve (e.g. {"text-generation"}).
    tasks: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: ModelSpec, store: ModelStore | None = None) -> None:
        self.spec = spec
        self.store = store

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights and warm up. Blocking; called once, off the event loop."""

    @abc.abstractmethod
    def run(self, request: Any, ctx: RequestContext) -> Any:
        """Serve one request and return the whole result. Blocking."""

    def stream(self, request: Any, ctx: RequestContext) -> Iterator[Any]:
        """Serve one request as a sequence of partial results. Default: one item, the whole result."""
        yield self.run(request, ctx)

    def info(self) -> Mapping[str, Any]:
        """Facts about the loaded model (files, dims, limits) for status pages."""
        return {"provider": self.provider, "model": self.spec.name}

    def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Release memory and handles. Called once at unload."""


def _load_class(target: str) -> type[Backend]:
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"{target} is not a subclass of aisemble.backend.Backend")
    return cls


def _plugin_entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_providers() -> dict[str, set[str]]:
    """provider -> the tasks it is known for ("*" for plugins, whose tasks are known once imported)."""
    providers: dict[str, set[str]] = {}
    for task, provider in BUILTIN_BACKENDS:
        providers.setdefault(provider, set()).add(task)
    for name in _plugin_entry_points():
        providers.setdefault(name, set()).add("*")
    return providers


def resolve_backend_class(task: str, provider: str) -> type[Backend]:
    """The Backend class for a task and provider: built-ins first, then the entry-point plugins."""
    target = BUILTIN_BACKENDS.get((task, provider))
    if target is not None:
        return _load_class(target)
    entry_point = _plugin_entry_points().get(provider)
    if entry_point is None:
        raise FailedPreconditionError(
            f"no backend for provider '{provider}' and task '{task}'",
            reason="BACKEND_NOT_FOUND",
            metadata={"provider": provider, "task": task},
        )
    cls = entry_point.load()
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise FailedPreconditionError(
            f"entry point '{provider}' ({entry_point.value}) is not an aisemble Backend", reason="BACKEND_INVALID"
        )
    if task not in cls.tasks:
        raise FailedPreconditionError(
            f"backend '{provider}' serves {sorted(cls.tasks)}, not '{task}'", reason="BACKEND_WRONG_TASK"
        )
    return cls


def create_backend(spec: ModelSpec, store: ModelStore | None) -> Backend:
    """Instantiate (without loading) the backend for a registry entry."""
    return resolve_backend_class(spec.task, spec.provider)(spec, store)
