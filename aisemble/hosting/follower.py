"""Keeps a service's hosted models in step with the gateway's registry (WatchModels), so a model
registered at run time (e.g. by a fine-tuning job) is loaded and served without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import grpc

from aisemble.config.schema import ConfigError
from aisemble.hosting.host import ModelHost
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.client import PLAINTEXT, Peer, open_channel
from aisemble.rpc.registry_messages import spec_from_proto

__all__ = ["RegistryFollower", "follow_registry_hooks"]

log = logging.getLogger(__name__)


class RegistryFollower:
    """Watches the registry and adds, replaces or removes this service's models in its ModelHost.

    Reconnects with backoff while the gateway is away. Models of other services are ignored.
    """

    def __init__(self, target: str, service: str, host: ModelHost, peer: Peer = PLAINTEXT) -> None:
        self.target = target
        self.peer = peer
        self.service = service
        self.host = host
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

    def start(self) -> None:
        """Begin following (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"registry-follower-{self.service}")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._follow()
                delay = 0.5  # the stream ended cleanly (the gateway is stopping): reconnect soon
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.debug("registry follower: %s; retrying in %.1f s", exc.code().name, delay)
            except Exception:  # a follower must never die: log, back off, follow again
                log.exception("registry follower of %s failed; retrying in %.1f s", self.service, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _follow(self) -> None:
        """One connection: the current models first (then the hosted ones the registry no longer has are
        unloaded), then every change as it comes."""
        async with open_channel(self.target, peer=self.peer) as channel:
            stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
            call = stub.WatchModels(rpb.WatchModelsRequest(send_current_models=True))
            current = {m.name for m in (await stub.ListModels(rpb.ListModelsRequest())).models}
            ours: set[str] = set()
            if not current:
                await self._reconcile(ours)
            async for change in call:
                try:
                    spec = spec_from_proto(change.model)
                except ConfigError as exc:
                    log.warning("registry entry %s is not valid here: %s", change.model.name, exc)
                    current.discard(change.model.name)
                    continue
                removed = change.change_type == rpb.CHANGE_TYPE_REMOVED
                if removed or spec.service != self.service:
                    ours.discard(spec.name)
                    if spec.name in self.host.models:
                        log.info("registry: %s removed (or moved away); unloading", spec.name)
                        await self.host.remove(spec.name)
                else:
                    ours.add(spec.name)
                    if self.host.models.get(spec.name) is None or self.host.models[spec.name].spec != spec:
                        log.info("registry: loading %s", spec.name)
                        await self.host.add(spec)
                if current and change.model.name in current:
                    current.discard(change.model.name)
                    if not current:
                        await self._reconcile(ours)

    async def _reconcile(self, ours: set[str]) -> None:
        """After a full listing: unload what this service hosts that the registry no longer has (removed while
        this follower was away)."""
        for name in [n for n in self.host.names() if n not in ours]:
            log.info("registry: %s is no longer registered; unloading", name)
            await self.host.remove(name)
        self.synced.set()


def follow_registry_hooks(
    target: str | None, service: str, host: ModelHost, peer: Peer = PLAINTEXT
) -> tuple[list[Callable[[], Awaitable[None]]], list[Callable[[], Awaitable[None]]]]:
    """(on_start, on_stop) hooks for an AisembleServer that follows the registry at target (none if None)."""
    if not target:
        return [], []
    follower = RegistryFollower(target, service, host, peer)

    async def start() -> None:
        follower.start()

    return [start], [follower.stop]
