"""Builds the gateway process: registry, router over the mesh's services, selector rules, cache, servers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from grpc import aio
from prometheus_client import Gauge

from aisemble.config.mesh import MeshConfig
from aisemble.config.models import ModelSpec
from aisemble.config.schema import CONFIG_DIR
from aisemble.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding
from aisemble.store.model_store import default_store_root
from gateway.cache import ResultCache
from gateway.handlers import generic_handlers
from gateway.proxy import Gateway
from gateway.registry import ModelRegistry
from gateway.registry_servicer import RegistryServicer
from gateway.router import Router, Upstream
from gateway.rules import SelectionRules, load_selection

__all__ = ["GatewayServer", "build_server"]

REGISTRY_SERVICE = registry_service_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"].full_name


def _add_generic(handler: object, server: aio.Server) -> None:
    server.add_generic_rpc_handlers((handler,))  # type: ignore[arg-type]


class GatewayServer(AisembleServer):
    """The gateway's AisembleServer, with its Gateway (registry, router, cache, stats) at hand."""

    gateway: Gateway


def build_server(
    config: ServerConfig,
    mesh: MeshConfig,
    models: Mapping[str, ModelSpec] | None = None,
    registry_path: Path | None = None,
    store_root: Path | None = None,
    rules: SelectionRules | None = None,
    cache: ResultCache | None = None,
) -> GatewayServer:
    """The gateway: the registry (persisted to registry_path, default configs/models.yaml) plus every public
    service, forwarded to the mesh services of configs/mesh.yaml. It never loads a model."""
    registry = ModelRegistry(registry_path or CONFIG_DIR / "models.yaml", store_root or default_store_root())
    upstreams = {
        name: Upstream(name, endpoint.addresses, mesh.max_message_bytes) for name, endpoint in mesh.services.items()
    }
    router = Router(upstreams)
    gateway = Gateway(registry, router, rules or load_selection(), cache)
    bindings = [
        ServiceBinding(
            REGISTRY_SERVICE,
            RegistryServicer(gateway),
            registry_service_pb2_grpc.add_ModelRegistryServiceServicer_to_server,
        )
    ]
    for service_name, handler in generic_handlers(gateway).items():
        bindings.append(ServiceBinding(service_name, handler, _add_generic))

    async def watch_health() -> None:
        for spec in registry.all():
            router.watch_model(spec.name, spec.service)

    async def close_router() -> None:
        await router.close()

    server = GatewayServer(config, bindings, on_start=[watch_health], on_stop=[close_router])
    server.gateway = gateway
    _cache_metrics(server, gateway)
    return server


def _cache_metrics(server: AisembleServer, gateway: Gateway) -> None:
    cache = gateway.cache
    for name, doc, read in (
        ("aisemble_cache_hits", "Gateway result cache hits.", lambda: cache.hits),
        ("aisemble_cache_misses", "Gateway result cache misses.", lambda: cache.misses),
        ("aisemble_cache_bytes", "Bytes held by the gateway result cache.", lambda: cache.bytes),
    ):
        Gauge(name, doc, registry=server.metrics.registry).set_function(read)
