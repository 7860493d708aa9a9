"""The models a service process hosts: loading off the event loop, per-model health, lookup, unloading."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aisemble.config.models import ModelSpec
from aisemble.errors import AisembleError, InvalidArgumentError, ModelNotFoundError, ModelNotReadyError
from aisemble.hosting.backend import Backend, create_backend
from aisemble.store.model_store import ModelStore, default_store_root

__all__ = ["HealthSetter", "HostedModel", "ModelHost", "ModelState"]

log = logging.getLogger(__name__)

#: (model name, serving) -> None; the server reports it as that model's grpc.health.v1 entry.
HealthSetter = Callable[[str, bool], None]


class ModelState(enum.Enum):
    """Where a hosted model is in its life cycle."""

    PENDING = "pending"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADED = "unloaded"


@dataclass
class HostedModel:
    """One model in this process: its spec, backend and state."""

    spec: ModelSpec
    backend: Backend | None = None
    state: ModelState = ModelState.PENDING
    error: str = ""
    load_seconds: float = 0.0
    #: Failed loads so far (reset by a success); the next try is at `retry_at` (time.monotonic()), if any.
    failures: int = 0
    retry_at: float | None = None


#: Reasons of load failures that a retry cannot mend (the entry itself is wrong): no retry for them.
_PERMANENT_REASONS = frozenset({"MODEL_CONFIG_INVALID", "MODEL_WRONG_TASK", "UNKNOWN_PROVIDER", "INVALID_CONFIG"})
#: Retries of a failed load: after 2 s, then twice as long each time, at most every 60 s.
RETRY_FIRST_S, RETRY_MAX_S = 2.0, 60.0


def _permanent(exc: Exception) -> bool:
    return isinstance(exc, InvalidArgumentError) or getattr(exc, "reason", "") in _PERMANENT_REASONS


BackendFactory = Callable[[ModelSpec, "ModelStore | None"], Backend]


class ModelHost:
    """Loads the models assigned to a service and answers 'which backend serves this name?'.

    Per-model grpc.health.v1 entries use the model name as the service name: NOT_SERVING until
    loaded, SERVING when ready, NOT_SERVING again if loading failed or on unload. A model that fails
    to load does not stop the others, and is tried again with backoff (2 s doubling to 60 s) unless its
    entry itself is wrong (a config error); its error says when the next try is.
    """

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        store: ModelStore | None = None,
        backend_factory: BackendFactory = create_backend,
    ) -> None:
        self._models = {spec.name: HostedModel(spec) for spec in specs}
        self._store = store
        self._factory = backend_factory
        self._set_health: HealthSetter | None = None
        self._retries: dict[str, asyncio.Task[None]] = {}

    @classmethod
    def for_service(cls, service: str, models: Mapping[str, ModelSpec], store: ModelStore | None = None) -> ModelHost:
        """A host for the registry's models whose service is `service`, loaded from the store (default: the
        project's model store)."""
        hosted = [spec for spec in models.values() if spec.service == service]
        return cls(hosted, store if store is not None else ModelStore(default_store_root()))

    def bind_health(self, set_health: HealthSetter) -> None:
        """Report model states to a health servicer from now on."""
        self._set_health = set_health
        for model in self._models.values():
            self._report(model)

    def _report(self, model: HostedModel) -> None:
        if self._set_health is None:
            return
        self._set_health(model.spec.name, model.state is ModelState.READY)

    @property
    def models(self) -> dict[str, HostedModel]:
        """Every hosted model by name."""
        return self._models

    def names(self) -> list[str]:
        """Names of the hosted models."""
        return list(self._models)

    async def load_all(self) -> None:
        """Load every model marked preload, one at a time (they compete for the same cores)."""
        for model in self._models.values():
            if model.spec.preload:
                await self.load(model.spec.name)

    async def load(self, name: str) -> HostedModel:
        """Load one model in a worker thread; failures are recorded, logged and reported unhealthy."""
        model = self._models[name]
        model.state = ModelState.LOADING
        self._report(model)
        await self._load(model)
        self._report(model)
        self._schedule_retry(model)
        return model

    async def _load(self, model: HostedModel) -> None:
        name = model.spec.name
        started = time.perf_counter()
        try:
            backend = self._factory(model.spec, self._store)
            await asyncio.to_thread(backend.load)
        except Exception as exc:
            model.state, model.error = ModelState.FAILED, str(exc) or type(exc).__name__
            model.failures += 1
            level = logging.WARNING if isinstance(exc, AisembleError) else logging.ERROR
            log.log(
                level, "model %s failed to load: %s", name, model.error, exc_info=not isinstance(exc, AisembleError)
            )
            if not _permanent(exc):
                wait = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (model.failures - 1))
                model.retry_at = time.monotonic() + wait
                model.error += f" (attempt {model.failures}; next try in {wait:.0f} s)"
        else:
            model.backend, model.state, model.error = backend, ModelState.READY, ""
            model.failures, model.retry_at = 0, None
            model.load_seconds = time.perf_counter() - started
            log.info("model %s ready (%s, %.1f s)", name, model.spec.provider, model.load_seconds)

    def _schedule_retry(self, model: HostedModel) -> None:
        """Try a failed load again at model.retry_at (one pending retry per model)."""
        if model.retry_at is None or model.state is not ModelState.FAILED:
            return
        name = model.spec.name
        previous = self._retries.pop(name, None)
        if previous is not None and previous is not asyncio.current_task():
            previous.cancel()
        self._retries[name] = asyncio.get_running_loop().create_task(self._retry(model), name=f"retry-load-{name}")

    async def _retry(self, model: HostedModel) -> None:
        await asyncio.sleep(max(0.0, (model.retry_at or 0.0) - time.monotonic()))
        if self._models.get(model.spec.name) is not model or model.state is not ModelState.FAILED:
            return
        log.info("model %s: trying to load again (attempt %d)", model.spec.name, model.failures + 1)
        await self.load(model.spec.name)

    def _cancel_retry(self, name: str) -> None:
        task = self._retries.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def spec(self, name: str) -> ModelSpec:
        """The spec of a hosted model, or ModelNotFoundError."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFoundError(name, known=self.names())
        return model.spec

    def get(self, name: str) -> tuple[ModelSpec, Backend]:
        """The spec and loaded backend for a name: ModelNotFoundError, or ModelNotReadyError if not loaded."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFoundError(name, known=self.names())
        if model.state is not ModelState.READY or model.backend is None:
            state = f"{model.state.value}: {model.error}" if model.error else model.state.value
            raise ModelNotReadyError(name, state)
        return model.spec, model.backend

    async def add(self, spec: ModelSpec) -> HostedModel:
        """Host a new (or changed) model: the old version keeps serving until the new one is loaded."""
        previous = self._models.get(spec.name)
        if previous is not None and previous.spec == spec and previous.state is ModelState.READY:
            return previous
        loaded = HostedModel(spec, state=ModelState.LOADING)
        if previous is None:
            self._models[spec.name] = loaded
            self._report(loaded)
        await self._load(loaded)
        if loaded.state is ModelState.READY or previous is None or previous.state is not ModelState.READY:
            self._cancel_retry(spec.name)
            self._models[spec.name] = loaded
            if previous is not None and previous.backend is not None:
                await asyncio.to_thread(previous.backend.cleanup)
            self._schedule_retry(loaded)
        else:
            log.warning("model %s: the new version failed to load; the old one keeps serving", spec.name)
        self._report(self._models[spec.name])
        return self._models[spec.name]

    async def remove(self, name: str) -> None:
        """Stop hosting a model and release it."""
        self._cancel_retry(name)
        model = self._models.pop(name, None)
        if model is None:
            return
        if self._set_health is not None:
            self._set_health(name, False)
        if model.backend is not None:
            await asyncio.to_thread(model.backend.cleanup)

    async def unload_all(self) -> None:
        """Mark every model NOT_SERVING and release its backend."""
        for name in list(self._retries):
            self._cancel_retry(name)
        for model in self._models.values():
            backend, model.backend = model.backend, None
            model.state = ModelState.UNLOADED
            self._report(model)
            if backend is not None:
                try:
                    await asyncio.to_thread(backend.cleanup)
                except Exception:
                    log.exception("cleanup of model %s failed", model.spec.name)
