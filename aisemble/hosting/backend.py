"""The backend interface every model runtime implements, and how a registry entry finds its backend class."""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from aisemble.errors import CancelledError, DeadlineExceededError, FailedPreconditionError
from aisemble.hosting.catalogue import backend_entry_point

if TYPE_CHECKING:
    from aisemble.config.models import ModelSpec
    from aisemble.store.model_store import ModelStore

__all__ = ["Backend", "RequestContext", "create_backend", "resolve_backend_class"]


@dataclass
class RequestContext:
    """What a backend needs to know about the call it serves: cancellation, the deadline, its trace context.

    Backends poll `check()` between steps (a decoding step, a batch); the runner sets `cancelled`
    when the client goes away, so compute stops within one step.
    """

    deadline: float | None = None  # time.monotonic() value
    cancelled: threading.Event = field(default_factory=threading.Event)
    trace: Any = None  # the call's OpenTelemetry context while tracing is on (parent of spans a backend records)

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


def resolve_backend_class(task: str, provider: str) -> type[Backend]:
    """The Backend class for a task and provider, from the `aisemble.backends` entry points (built-in or plugin)."""
    entry_point = backend_entry_point(task, provider)
    if entry_point is None:
        raise FailedPreconditionError(
            f"no backend for provider '{provider}' and task '{task}'",
            reason="BACKEND_NOT_FOUND",
            metadata={"provider": provider, "task": task},
        )
    cls = entry_point.load()
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise FailedPreconditionError(
            f"entry point '{entry_point.name}' ({entry_point.value}) is not an aisemble Backend",
            reason="BACKEND_INVALID",
        )
    if task not in cls.tasks:
        raise FailedPreconditionError(
            f"backend '{provider}' serves {sorted(cls.tasks)}, not '{task}'", reason="BACKEND_WRONG_TASK"
        )
    return cls


def create_backend(spec: ModelSpec, store: ModelStore | None) -> Backend:
    """Instantiate (without loading) the backend for a registry entry."""
    return resolve_backend_class(spec.task, spec.provider)(spec, store)
