"""Builds the registry service process: the store in the state directory, the contract, the same key checks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from aisemble.config.mesh import MeshConfig
from aisemble.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from aisemble.rpc.auth import Authenticator, AuthInterceptor
from aisemble.rpc.registry_servicer import RegistryServicer
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding
from aisemble.security.keys import KeyFile, KeyRing
from aisemble.security.quotas import QuotaBook
from aisemble.store.model_store import default_store_root
from services.registry.store import ModelRegistry, default_registry_path, seed_registry

__all__ = ["RegistryServer", "build_server"]

SERVICE_NAME = registry_service_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"].full_name


class RegistryServer(AisembleServer):
    """The registry service's AisembleServer, with its store at hand."""

    registry: ModelRegistry


def build_server(
    config: ServerConfig,
    mesh: MeshConfig | None,
    path: Path | None = None,
    seed: Path | None = None,
    store_root: Path | None = None,
    keys: KeyFile | None = None,
) -> RegistryServer:
    """The registry service: the one writer of <state>/registry/models.yaml (`path`), seeded from the shipped
    configs/models.yaml (`seed`; see seed_registry). Writes may name files inside the model store (`store_root`) only.
    Every call is checked against the API keys like the gateway's: the gateways, the services' followers and the
    fine-tuning publisher call it with the mesh key; a gateway forwards a write on behalf of its caller."""
    if path is None or seed is not None:  # an explicit path without a seed (tests) is used as it is
        path = path or default_registry_path()
        seed_registry(path, seed)
    providers = mesh.security.providers if mesh is not None else None
    registry = ModelRegistry(path, store_root or default_store_root(), providers)
    loopback_only = mesh.loopback_only() if mesh is not None else True
    window_s = mesh.security.quota_window_s if mesh is not None else 60.0
    authenticator = Authenticator(KeyRing(keys or KeyFile()), QuotaBook(window_s), loopback_only=loopback_only)
    config = replace(config, interceptors=[*config.interceptors, AuthInterceptor(authenticator)])
    binding = ServiceBinding(
        SERVICE_NAME, RegistryServicer(registry), registry_service_pb2_grpc.add_ModelRegistryServiceServicer_to_server
    )
    server = RegistryServer(config, [binding])
    server.registry = registry
    return server
