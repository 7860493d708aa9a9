"""aisemble.registry.v1.ModelRegistryService: list, get, register, deregister, watch and explain selection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc import aio

from aisemble.common.v1 import common_pb2
from aisemble.config.models import ModelSpec
from aisemble.errors import InvalidArgumentError, ResourceExhaustedError
from aisemble.registry.v1 import registry_service_pb2 as pb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.resolution import AUTO
from aisemble.rpc.registry_messages import TASK_FROM_PROTO, model_to_proto, spec_from_proto
from gateway.auth import current_principal
from gateway.proxy import Gateway

__all__ = ["RegistryServicer"]

_CHANGE = {"added": pb.CHANGE_TYPE_ADDED, "updated": pb.CHANGE_TYPE_UPDATED, "removed": pb.CHANGE_TYPE_REMOVED}
_MAX_PAGE = 1000
#: What a registry entry says about where and how a model runs: shown to admins and the mesh only.
_CONFIGURATION_FIELDS = ("model_path", "endpoint", "params")


class RegistryServicer(registry_service_pb2_grpc.ModelRegistryServiceServicer):
    """The registry contract over ModelRegistry, with live health and figures from the gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.registry = gateway.registry

    def _proto(self, spec: ModelSpec) -> pb.Model:
        """The entry as this caller may see it: endpoints, params and store paths only for admins and the mesh."""
        model = model_to_proto(spec, self.gateway.router.health_of(spec.name), self.gateway.stats.get(spec.name))
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
            for spec in self.registry.all()
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
        return pb.GetModelResponse(model=self._proto(self.registry.get(request.name)))

    async def RegisterModel(
        self, request: pb.RegisterModelRequest, context: aio.ServicerContext
    ) -> pb.RegisterModelResponse:
        if not request.HasField("model"):
            raise InvalidArgumentError.for_field("model", "is required")
        if request.model.name == AUTO:
            raise InvalidArgumentError.for_field("model.name", "'auto' is reserved for automatic selection")
        spec = spec_from_proto(request.model)
        registered = await self.registry.register(
            spec, replace_existing=request.replace_existing, validate_only=request.validate_only
        )
        if not request.validate_only:
            self.gateway.router.watch_model(registered.name, registered.service)
        return pb.RegisterModelResponse(model=self._proto(registered))

    async def DeregisterModel(
        self, request: pb.DeregisterModelRequest, context: aio.ServicerContext
    ) -> pb.DeregisterModelResponse:
        if not request.name:
            raise InvalidArgumentError.for_field("name", "is required")
        removed = await self.registry.deregister(request.name)
        self.gateway.router.unwatch_model(removed.name)
        self.gateway.stats.forget(removed.name)
        return pb.DeregisterModelResponse(model=model_to_proto(removed))

    async def WatchModels(
        self, request: pb.WatchModelsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.WatchModelsResponse]:
        principal = current_principal.get()
        async with self.registry.watch() as changes:
            if request.send_current_models:
                for spec in self.registry.all():
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
        if request.task == common_pb2.TASK_UNSPECIFIED or request.task not in TASK_FROM_PROTO:
            raise InvalidArgumentError.for_field("task", "is required: the task to select a model for")
        task = TASK_FROM_PROTO[request.task]
        output_tokens = request.max_output_tokens if request.HasField("max_output_tokens") else None
        if request.model and request.model != AUTO:
            current_principal.get().check_model(request.model)
            spec = self.registry.get(request.model)
            selection = common_pb2.ModelSelection(
                model=spec.name, model_version=spec.version, reason="requested by name"
            )
            return pb.ResolveModelResponse(selection=selection)
        decision, features = await self.gateway.resolver.decide(
            task, request.text, output_tokens, request.language_hint
        )
        spec = self.registry.get(decision.model)
        return pb.ResolveModelResponse(
            selection=common_pb2.ModelSelection(
                model=spec.name, model_version=spec.version, automatic=True, reason=decision.reason, rule=decision.rule
            ),
            candidates=[
                pb.Candidate(model=c.model, eligible=c.eligible, score=c.score, reason=c.reason)
                for c in decision.candidates
                if not c.reason.startswith("serves ")
            ],
            detected_domain=features.domain,
            detected_language=features.language,
        )
