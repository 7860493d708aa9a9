"""The fine-tuning service's client of the registry service: look a model up, register a result."""

from __future__ import annotations

import grpc
from grpc import aio

from aisemble.config.models import ModelSpec
from aisemble.errors import AlreadyExistsError, UnavailableError
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.client import PLAINTEXT, LazyChannel, Peer, error_from_call
from aisemble.rpc.registry_messages import model_to_proto, spec_from_proto

__all__ = ["RegistryClient"]

_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


class RegistryClient:
    """ModelRegistryService calls with deadlines; one channel, opened on first use (inside the event loop)."""

    def __init__(self, target: str, timeout_s: float = 5.0, peer: Peer = PLAINTEXT) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._peer = peer
        self._channel = LazyChannel(target, peer=peer)

    def _registry(self) -> registry_service_pb2_grpc.ModelRegistryServiceStub:
        return registry_service_pb2_grpc.ModelRegistryServiceStub(self._channel.channel)

    def _error(self, exc: aio.AioRpcError) -> Exception:
        if exc.code() in _UNREACHABLE:
            return UnavailableError(
                f"the model registry at {self.target} is not reachable ({exc.code().name}: {exc.details()})",
                reason="REGISTRY_UNAVAILABLE",
                retry_after_s=1.0,
            )
        if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
            return AlreadyExistsError(exc.details() or "already registered", reason="MODEL_EXISTS")
        return error_from_call(exc, "registry", (self.target,))

    async def get(self, name: str) -> ModelSpec | None:
        """The registered model of that name, None when there is none."""
        try:
            reply = await self._registry().GetModel(rpb.GetModelRequest(name=name), timeout=self.timeout_s)
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise self._error(exc) from None
        return spec_from_proto(reply.model)

    async def register(self, spec: ModelSpec) -> None:
        """Register a new model (ALREADY_EXISTS when the name is taken)."""
        request = rpb.RegisterModelRequest(model=model_to_proto(spec))
        try:
            await self._registry().RegisterModel(request, timeout=self.timeout_s)
        except aio.AioRpcError as exc:
            raise self._error(exc) from None

    async def reconnect(self) -> None:
        """Drop the channel; the next call opens a new one. During an outage gRPC waits longer and longer between
        attempts to reconnect (up to two minutes), and calls fail at once meanwhile: a fresh channel connects
        as soon as the registry is back."""
        stale, self._channel = self._channel, LazyChannel(self.target, peer=self._peer)
        await stale.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
