"""The gateway's view of the registry: followed from the registry service, read locally, writes forwarded."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc

from aisemble.config.models import ModelSpec
from aisemble.errors import UnavailableError
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.auth import current_principal
from aisemble.rpc.client import ON_BEHALF_OF_KEY, PLAINTEXT, LazyChannel, Peer, error_from_call
from aisemble.rpc.registry_messages import model_to_proto, spec_from_proto
from aisemble.rpc.registry_servicer import ModelChange, ModelTable
from aisemble.rpc.registry_watch import RegistryWatch

__all__ = ["RegistryView"]

log = logging.getLogger(__name__)

ChangeListener = Callable[[ModelChange], Awaitable[None] | None]


class RegistryView(RegistryWatch, ModelTable):
    """Every registered model as the registry service last said, kept by WatchModels.

    Reads never leave the gateway, so it keeps serving from its last view while the registry is away. Writes go
    to the registry service on the caller's behalf (UNAVAILABLE while it is away); their result is applied here
    at once (a caller reads its own write), and every other gateway sees it through its own watch.
    """

    def __init__(self, target: str, peer: Peer = PLAINTEXT, write_timeout_s: float = 10.0) -> None:
        RegistryWatch.__init__(self, target, peer, name="gateway-registry-view")
        ModelTable.__init__(self)
        self.write_timeout_s = write_timeout_s
        self._listeners: list[ChangeListener] = []
        self._channel = LazyChannel(target, peer=peer)

    def listen(self, listener: ChangeListener) -> None:
        """Call `listener` on every change of the view (the router's health watches, the stats)."""
        self._listeners.append(listener)

    # --- following the registry service ---
    async def on_change(self, kind: str, spec: ModelSpec) -> None:
        if kind == "removed":
            if self._models.pop(spec.name, None) is not None:
                await self._announce(ModelChange("removed", spec))
            return
        previous = self._models.get(spec.name)
        if previous == spec:
            return  # a replay on reconnection, or the echo of our own write
        self._models[spec.name] = spec
        await self._announce(ModelChange("updated" if previous is not None else "added", spec))

    async def on_synced(self, registered: set[str]) -> None:
        for name in [n for n in self._models if n not in registered]:
            await self._announce(ModelChange("removed", self._models.pop(name)))
        log.info("registry view: %d models from %s", len(self._models), self.target)

    async def _announce(self, change: ModelChange) -> None:
        for listener in self._listeners:
            result = listener(change)
            if result is not None:
                await result
        self._notify(change)

    # --- writes (forwarded) ---
    def _stub(self) -> registry_service_pb2_grpc.ModelRegistryServiceStub:
        return registry_service_pb2_grpc.ModelRegistryServiceStub(self._channel.channel)

    def _on_behalf(self) -> tuple[tuple[str, str], ...]:
        return ((ON_BEHALF_OF_KEY, current_principal.get().key_id),)

    def _error(self, exc: grpc.aio.AioRpcError) -> Exception:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return UnavailableError(
                f"the registry service at {self.target} is not reachable, so the registry cannot change now "
                f"({exc.code().name}); this gateway keeps serving the {len(self._models)} models it knows",
                reason="REGISTRY_UNAVAILABLE",
                metadata={"service": "registry"},
                retry_after_s=1.0,
            )
        return error_from_call(exc, "registry", (self.target,))

    async def register(self, spec: ModelSpec, replace_existing: bool = False, validate_only: bool = False) -> ModelSpec:
        """Register (or replace, or only validate) through the registry service; applied here before returning."""
        request = rpb.RegisterModelRequest(
            model=model_to_proto(spec), replace_existing=replace_existing, validate_only=validate_only
        )
        try:
            reply = await self._stub().RegisterModel(request, timeout=self.write_timeout_s, metadata=self._on_behalf())
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        registered = spec_from_proto(reply.model)
        if not validate_only:
            await self.on_change("added", registered)
        return registered

    async def deregister(self, name: str) -> ModelSpec:
        """Remove through the registry service; applied here before returning."""
        try:
            reply = await self._stub().DeregisterModel(
                rpb.DeregisterModelRequest(name=name), timeout=self.write_timeout_s, metadata=self._on_behalf()
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        removed = spec_from_proto(reply.model)
        await self.on_change("removed", self._models.get(name, removed))
        return removed

    async def stop(self) -> None:
        """Stop following and close the write channel."""
        await super().stop()
        await self._channel.close()
