"""Builds the gateway process: the followed registry view, router over the mesh's services, selector, cache."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace

from grpc import aio
from prometheus_client import CollectorRegistry, Counter, Gauge

from aisemble.config.mesh import MeshConfig
from aisemble.config.schema import ConfigError
from aisemble.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from aisemble.rpc.auth import Authenticator, AuthInterceptor
from aisemble.rpc.client import Peer
from aisemble.rpc.client import registry_target as registry_target_of
from aisemble.rpc.registry_servicer import ModelChange
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding
from aisemble.rpc.tls import registry_peer as registry_peer_of
from aisemble.rpc.tls import service_peer
from aisemble.security.keys import KeyFile, KeyRing
from aisemble.security.quotas import QuotaBook, UsageFile, gateway_usage_path
from gateway.cache import ResultCache
from gateway.handlers import generic_handlers
from gateway.kserve import kserve_binding
from gateway.proxy import Gateway
from gateway.registry_servicer import GatewayRegistryServicer
from gateway.registry_view import RegistryView
from gateway.router import Router, Upstream
from gateway.rules import SelectionRules, load_selection

__all__ = ["GatewayServer", "build_server"]

log = logging.getLogger(__name__)

REGISTRY_SERVICE = registry_service_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"].full_name


def _add_generic(handler: object, server: aio.Server) -> None:
    server.add_generic_rpc_handlers((handler,))  # type: ignore[arg-type]


class GatewayServer(AisembleServer):
    """The gateway's AisembleServer, with its Gateway (registry, router, cache, stats) at hand."""

    gateway: Gateway


def build_server(
    config: ServerConfig,
    mesh: MeshConfig,
    registry_target: str | None = None,
    registry_peer: Peer | None = None,
    rules: SelectionRules | None = None,
    cache: ResultCache | None = None,
    keys: KeyFile | None = None,
    usage: UsageFile | None = None,
) -> GatewayServer:
    """A gateway replica: stateless. It follows the registry service (registry_target, default the mesh's; reached
    as registry_peer, default over the mesh's mTLS with the mesh key) and
    serves every public service, forwarded to the mesh services of configs/mesh.yaml (over mTLS when
    mesh.security.mtls); registry writes go to the registry service. It never loads a model. Every call is
    checked against the API keys of `keys` (default <state>/auth/keys.json); this replica's per-key usage totals
    are kept in `usage` (default <state>/auth/usage/<port>.json)."""
    security = mesh.security
    target = registry_target_of(mesh, registry_target)
    if target is None:
        raise ConfigError("the gateway needs the registry service's address: mesh.yaml `registry: {addresses: ...}`")
    ring = KeyRing(keys or KeyFile())
    if not mesh.loopback_only() and not ring.has_keys():
        raise ConfigError(
            f"the mesh listens beyond loopback and {ring.file.path} holds no API key: anyone who reaches a port "
            "could call it. Create one with `aisemble keys create --role admin` (make run does it), or bind "
            "127.0.0.1 in mesh.yaml"
        )
    usage_file = usage or UsageFile(gateway_usage_path(config.address))
    quotas = QuotaBook(security.quota_window_s)
    quotas.usage = usage_file.read()
    authenticator = Authenticator(ring, quotas, loopback_only=mesh.loopback_only())
    config = replace(config, interceptors=[*config.interceptors, AuthInterceptor(authenticator)])
    registry = RegistryView(target, registry_peer or registry_peer_of(mesh, "gateway"))
    upstreams = {
        name: Upstream(name, endpoint.addresses, mesh.max_message_bytes, service_peer(security, name, "gateway"))
        for name, endpoint in mesh.services.items()
    }
    router = Router(upstreams, forward_metadata=frozenset(security.forward_metadata))
    cache_lookups = _CacheLookups()
    gateway = Gateway(
        registry,
        router,
        rules or load_selection(),
        cache,
        authenticator=authenticator,
        selection_max_chars=security.selection_max_chars,
        on_cache=cache_lookups.count,
    )
    bindings = [
        ServiceBinding(
            REGISTRY_SERVICE,
            GatewayRegistryServicer(gateway),
            registry_service_pb2_grpc.add_ModelRegistryServiceServicer_to_server,
        )
    ]
    for service_name, handler in generic_handlers(gateway).items():
        bindings.append(ServiceBinding(service_name, handler, _add_generic))
    bindings.append(kserve_binding(gateway))

    def follow_change(change: ModelChange) -> None:
        if change.kind == "removed":
            router.unwatch_model(change.spec.name)
            gateway.stats.forget(change.spec.name)
            cache_lookups.forget(change.spec.name)
        else:
            router.watch_model(change.spec.name, change.spec.service)

    registry.listen(follow_change)

    async def follow_registry() -> None:
        """Serve only once the registry's models are known (health NOT_SERVING until then)."""
        registry.start()
        while True:
            try:
                await asyncio.wait_for(registry.synced.wait(), timeout=10.0)
                return
            except TimeoutError:
                log.warning("gateway: still waiting for the registry service at %s", target)

    async def close_router() -> None:
        await registry.stop()
        await router.close()

    flusher: list[asyncio.Task[None]] = []

    async def flush_usage_periodically() -> None:
        flusher.append(asyncio.create_task(_flush_usage(quotas, usage_file)))

    async def flush_usage_now() -> None:
        for task in flusher:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(_write_usage, quotas, usage_file)

    server = GatewayServer(
        config,
        bindings,
        on_start=[follow_registry, flush_usage_periodically],
        on_stop=[close_router, flush_usage_now],
    )
    server.gateway = gateway
    authenticator.bind_metrics(server.metrics.registry)
    _cache_metrics(server, gateway)
    cache_lookups.bind(server.metrics.registry)
    return server


def _write_usage(quotas: QuotaBook, usage_file: UsageFile) -> None:
    if quotas.changed:
        quotas.changed = False
        usage_file.write({key: replace(value) for key, value in quotas.usage.items()})


async def _flush_usage(quotas: QuotaBook, usage_file: UsageFile, every_s: float = 2.0) -> None:
    """Write the per-key totals when they changed (for `aisemble keys list` and restarts)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(_write_usage, quotas, usage_file)
        except OSError as exc:
            log.warning("could not write the key usage to %s: %s", usage_file.path, exc)


class _CacheLookups:
    """Result cache hits and misses per model (registered models only: a deregistered one's series go)."""

    def __init__(self) -> None:
        self.hits: Counter | None = None
        self.misses: Counter | None = None

    def bind(self, registry: CollectorRegistry) -> None:
        self.hits = Counter("aisemble_model_cache_hits", "Result cache hits, per model.", ["model"], registry=registry)
        self.misses = Counter(
            "aisemble_model_cache_misses",
            "Result cache misses (cacheable requests), per model.",
            ["model"],
            registry=registry,
        )

    def count(self, model: str, hit: bool) -> None:
        counter = self.hits if hit else self.misses
        if counter is not None:
            counter.labels(model).inc()

    def forget(self, model: str) -> None:
        for counter in (self.hits, self.misses):
            if counter is not None:
                with contextlib.suppress(KeyError):
                    counter.remove(model)


def _cache_metrics(server: AisembleServer, gateway: Gateway) -> None:
    cache = gateway.cache
    for name, doc, read in (
        ("aisemble_cache_hits", "Gateway result cache hits.", lambda: cache.hits),
        ("aisemble_cache_misses", "Gateway result cache misses.", lambda: cache.misses),
        ("aisemble_cache_bytes", "Bytes held by the gateway result cache.", lambda: cache.bytes),
    ):
        Gauge(name, doc, registry=server.metrics.registry).set_function(read)
