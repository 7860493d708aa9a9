"""aisemble.registry.v1.ModelRegistryService over a catalogue of models (the registry service's store, a gateway's
view of it): list, get, register, deregister, watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from grpc import aio

from aisemble.common.v1 import common_pb2
from aisemble.config.models import ModelSpec
from aisemble.errors import InvalidArgumentError, ModelNotFoundError, ResourceExhaustedError, UnimplementedError
from aisemble.registry.v1 import registry_service_pb2 as pb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.resolution import AUTO
from aisemble.rpc.auth import current_principal
from aisemble.rpc.registry_messages import TASK_FROM_PROTO, model_to_proto, spec_from_proto

__all__ = ["ModelCatalogue", "ModelChange", "ModelTable", "RegistryServicer"]

log = logging.getLogger(__name__)

_CHANGE = {"added": pb.CHANGE_TYPE_ADDED, "updated": pb.CHANGE_TYPE_UPDATED, "removed": pb.CHANGE_TYPE_REMOVED}
_MAX_PAGE = 1000
#: What a registry entry says about where and how a model runs: shown to admins and the mesh only.
_CONFIGURATION_FIELDS = ("model_path", "endpoint", "params")


@dataclass(frozen=True)
class ModelChange:
    """One change seen by watchers: kind is 'added', 'updated' or 'removed'."""

    kind: str
    spec: ModelSpec


class ModelTable:
    """Registered models in memory, in the registry's order, with watchers: the reads shared by the registry's
    store and a gateway's view of it. Each watcher gets every change through a bounded queue; one that falls
    behind gets None (it must reconnect) and is dropped."""

    def __init__(self, models: dict[str, ModelSpec] | None = None) -> None:
        self._models: dict[str, ModelSpec] = dict(models or {})
        self._watchers: set[asyncio.Queue[ModelChange | None]] = set()

    def all(self) -> list[ModelSpec]:
        """Every registered model, in the registry's order."""
        return list(self._models.values())

    def get(self, name: str) -> ModelSpec:
        """One model by name, or ModelNotFoundError."""
        spec = self._models.get(name)
        if spec is None:
            raise ModelNotFoundError(name, known=list(self._models))
        return spec

    def find(self, name: str) -> ModelSpec | None:
        """One model by name, or None."""
        return self._models.get(name)

    def _notify(self, change: ModelChange) -> None:
        for queue in list(self._watchers):
            if queue.qsize() >= queue.maxsize - 1:  # keep the last place for the end marker
                self._watchers.discard(queue)
                queue.put_nowait(None)
                log.warning("a registry watcher fell behind and was dropped")
            else:
                queue.put_nowait(change)

    @contextlib.asynccontextmanager
    async def watch(self, max_pending: int = 256) -> AsyncIterator[asyncio.Queue[ModelChange | None]]:
        """A queue of changes from now on (None: the watcher fell behind and must reconnect)."""
        queue: asyncio.Queue[ModelChange | None] = asyncio.Queue(max_pending + 1)
        self._watchers.add(queue)
        try:
            yield queue
        finally:
            self._watchers.discard(queue)


class ModelCatalogue(Protocol):
    """What the servicer serves: the registry's own store, or a gateway's followed view of it."""

    def all(self) -> list[ModelSpec]: ...

    def get(self, name: str) -> ModelSpec: ...

    def watch(self) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[ModelChange | None]]: ...

    async def register(
        self, spec: ModelSpec, replace_existing: bool = False, validate_only: bool = False
    ) -> ModelSpec: ...

    async def deregister(self, name: str) -> ModelSpec: ...


class RegistryServicer(registry_service_pb2_grpc.ModelRegistryServiceServicer):
    """The registry contract over a catalogue. Callers see the models their key allows; endpoints, params and
    store paths only with an admin or mesh key. ResolveModel belongs to the gateway (it selects models)."""

    def __init__(self, catalogue: ModelCatalogue) -> None:
        self.catalogue = catalogue

    def describe(self, spec: ModelSpec) -> pb.Model:
        """The entry as a message (the gateway adds live health and figures)."""
        return model_to_proto(spec)

    def _proto(self, spec: ModelSpec) -> pb.Model:
        """The entry as this caller may see it."""
        model = self.describe(spec)
        if not current_principal.get().sees_configuration:
            for name in _CONFIGURATION_FIELDS:
                model.ClearField(name)
        return model

    async def ListModels(self, request: pb.ListModelsRequest, context: aio.ServicerContext) -> pb.ListModelsResponse:
        if request.page_size < 0:
            raise InvalidArgumentError.for_field("page_size", "must be >= 0")
        try:
            offset = int(request.page_token or "0")
        except ValueError:
            raise InvalidArgumentError.for_field("page_token", "is not a token this server issued") from None
        task = TASK_FROM_PROTO.get(request.task) if request.task != common_pb2.TASK_UNSPECIFIED else None
        principal = current_principal.get()
        specs = [
            spec
            for spec in self.catalogue.all()
            if principal.allows_model(spec.name)
            and (task is None or spec.task == task)
            and (not request.domain or request.domain in spec.domains)
            and (not request.provider or request.provider == spec.provider)
            and (not request.language or request.language in spec.languages)
        ]
        size = min(request.page_size or _MAX_PAGE, _MAX_PAGE)
        page = specs[offset : offset + size]
        next_token = str(offset + size) if offset + size < len(specs) else ""
        return pb.ListModelsResponse(models=[self._proto(s) for s in page], next_page_token=next_token)

    async def GetModel(self, request: pb.GetModelRequest, context: aio.ServicerContext) -> pb.GetModelResponse:
        if not request.name:
            raise InvalidArgumentError.for_field("name", "is required")
        current_principal.get().check_model(request.name)
        return pb.GetModelResponse(model=self._proto(self.catalogue.get(request.name)))

    async def RegisterModel(
        self, request: pb.RegisterModelRequest, context: aio.ServicerContext
    ) -> pb.RegisterModelResponse:
        if not request.HasField("model"):
            raise InvalidArgumentError.for_field("model", "is required")
        if request.model.name == AUTO:
            raise InvalidArgumentError.for_field("model.name", "'auto' is reserved for automatic selection")
        registered = await self.catalogue.register(
            spec_from_proto(request.model),
            replace_existing=request.replace_existing,
            validate_only=request.validate_only,
        )
        return pb.RegisterModelResponse(model=self._proto(registered))

    async def DeregisterModel(
        self, request: pb.DeregisterModelRequest, context: aio.ServicerContext
    ) -> pb.DeregisterModelResponse:
        if not request.name:
            raise InvalidArgumentError.for_field("name", "is required")
        removed = await self.catalogue.deregister(request.name)
        return pb.DeregisterModelResponse(model=model_to_proto(removed))

    async def WatchModels(
        self, request: pb.WatchModelsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.WatchModelsResponse]:
        principal = current_principal.get()
        async with self.catalogue.watch() as changes:
            if request.send_current_models:
                for spec in self.catalogue.all():
                    if principal.allows_model(spec.name):
                        yield pb.WatchModelsResponse(change_type=pb.CHANGE_TYPE_ADDED, model=self._proto(spec))
            while True:
                change = await changes.get()
                if change is None:
                    raise ResourceExhaustedError(
                        "this watcher fell behind the registry's changes; reconnect with send_current_models",
                        reason="WATCHER_TOO_SLOW",
                        retry_after_s=0.0,
                    )
                if principal.allows_model(change.spec.name):
                    yield pb.WatchModelsResponse(change_type=_CHANGE[change.kind], model=self._proto(change.spec))
                await asyncio.sleep(0)

    async def ResolveModel(
        self, request: pb.ResolveModelRequest, context: aio.ServicerContext
    ) -> pb.ResolveModelResponse:
        raise UnimplementedError(
            "the registry service stores models; selection (ResolveModel) is the gateway's: call it there",
            reason="ASK_THE_GATEWAY",
        )

    async def ListRoutingDecisions(
        self, request: pb.ListRoutingDecisionsRequest, context: aio.ServicerContext
    ) -> pb.ListRoutingDecisionsResponse:
        raise UnimplementedError(
            "the registry service makes no selection; the gateways record their `auto` decisions "
            "(ListRoutingDecisions): call it there",
            reason="ASK_THE_GATEWAY",
        )
