"""Following the registry service (WatchModels): reconnects with backoff, the full listing, then every change."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from aisemble.config.models import ModelSpec
from aisemble.config.schema import ConfigError
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.client import PLAINTEXT, Peer, open_channel
from aisemble.rpc.registry_messages import spec_from_proto

__all__ = ["RegistryWatch"]

log = logging.getLogger(__name__)

_KIND = {rpb.CHANGE_TYPE_ADDED: "added", rpb.CHANGE_TYPE_UPDATED: "updated", rpb.CHANGE_TYPE_REMOVED: "removed"}


class RegistryWatch:
    """Follows the registry at `target`; subclasses say what a change does (on_change) and what to do once the
    current models have all been seen (on_synced, after every (re)connection: entries removed while this
    follower was away are the ones it did not see). A follower never dies: it logs, backs off and follows again.
    """

    def __init__(self, target: str, peer: Peer = PLAINTEXT, name: str = "registry-follower") -> None:
        self.target = target
        self.peer = peer
        self.name = name
        self.synced = asyncio.Event()
        self.connected = False
        self._task: asyncio.Task[None] | None = None

    async def on_change(self, kind: str, spec: ModelSpec) -> None:
        """One change: kind is 'added', 'updated' or 'removed'."""

    async def on_synced(self, registered: set[str]) -> None:
        """The current listing is complete: `registered` are the valid entries the registry holds."""

    def start(self) -> None:
        """Begin following (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

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
                delay = 0.5  # the stream ended cleanly (the registry is stopping): reconnect soon
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                # Away or restarting: expected, quiet. Anything else (a key the registry refuses, ...) is a mistake.
                level = logging.DEBUG if exc.code() == grpc.StatusCode.UNAVAILABLE else logging.WARNING
                log.log(level, "%s: %s %s; retrying in %.1f s", self.name, exc.code().name, exc.details(), delay)
            except Exception:
                log.exception("%s failed; retrying in %.1f s", self.name, delay)
            finally:
                self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _follow(self) -> None:
        """One connection: the current models first (announced by the watch, counted by a listing), then every
        change as it comes."""
        async with open_channel(self.target, peer=self.peer) as channel:
            stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
            call = stub.WatchModels(rpb.WatchModelsRequest(send_current_models=True))
            pending = {m.name for m in (await stub.ListModels(rpb.ListModelsRequest())).models}
            self.connected = True
            registered: set[str] = set()
            if not pending:
                await self.on_synced(registered)
                self.synced.set()
            async for change in call:
                name = change.model.name
                try:
                    spec = spec_from_proto(change.model)
                except ConfigError as exc:
                    log.warning("registry entry %s is not valid here: %s", name, exc)
                    registered.discard(name)
                else:
                    kind = _KIND.get(change.change_type, "updated")
                    (registered.discard if kind == "removed" else registered.add)(name)
                    await self.on_change(kind, spec)
                if name in pending:
                    pending.discard(name)
                    if not pending:
                        await self.on_synced(registered)
                        self.synced.set()
