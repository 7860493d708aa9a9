"""Keeps a service's hosted models in step with the registry service (WatchModels), so a model
registered at run time (e.g. by a fine-tuning job) is loaded and served without a restart."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aisemble.config.models import ModelSpec
from aisemble.hosting.host import ModelHost
from aisemble.rpc.client import PLAINTEXT, Peer
from aisemble.rpc.registry_watch import RegistryWatch

__all__ = ["RegistryFollower", "follow_registry_hooks"]

log = logging.getLogger(__name__)


class RegistryFollower(RegistryWatch):
    """Watches the registry and adds, replaces or removes this service's models in its ModelHost.

    Reconnects with backoff while the registry is away. Models of other services are ignored.
    """

    def __init__(self, target: str, service: str, host: ModelHost, peer: Peer = PLAINTEXT) -> None:
        super().__init__(target, peer, name=f"registry-follower-{service}")
        self.service = service
        self.host = host

    async def on_change(self, kind: str, spec: ModelSpec) -> None:
        if kind == "removed" or spec.service != self.service:
            if spec.name in self.host.models:
                log.info("registry: %s removed (or moved away); unloading", spec.name)
                await self.host.remove(spec.name)
        elif self.host.models.get(spec.name) is None or self.host.models[spec.name].spec != spec:
            log.info("registry: loading %s", spec.name)
            await self.host.add(spec)

    async def on_synced(self, registered: set[str]) -> None:
        """Unload what this service hosts that the registry no longer has (removed while this follower was away)."""
        for name in [n for n in self.host.names() if n not in registered]:
            log.info("registry: %s is no longer registered; unloading", name)
            await self.host.remove(name)


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
