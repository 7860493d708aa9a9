"""Builds the ensemble service process: it hosts no model and calls its members through the gateway."""

from __future__ import annotations

from collections.abc import Mapping

from aisemble.config.mesh import MeshConfig
from aisemble.config.models import ModelSpec
from aisemble.ensemble.v1 import ensemble_service_pb2, ensemble_service_pb2_grpc
from aisemble.rpc.client import gateway_target as gateway_target_of
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding
from aisemble.rpc.tls import mesh_gateway_peer
from services.ensemble.runner import EnsembleRunner
from services.ensemble.servicer import EnsembleServicer

__all__ = ["build_server"]

SERVICE_NAME = ensemble_service_pb2.DESCRIPTOR.services_by_name["EnsembleService"].full_name


def build_server(
    config: ServerConfig,
    mesh: MeshConfig,
    models: Mapping[str, ModelSpec] | None = None,
    gateway_target: str | None = None,
) -> AisembleServer:
    """The ensemble service; members are called through the gateway (default: the mesh's gateway address)."""
    target = gateway_target_of(mesh, gateway_target)
    assert target is not None  # a mesh always names its gateway
    runner = EnsembleRunner(target, mesh.max_message_bytes, mesh_gateway_peer(mesh, "ensemble"))

    async def close_runner() -> None:
        await runner.close()

    binding = ServiceBinding(
        SERVICE_NAME, EnsembleServicer(runner), ensemble_service_pb2_grpc.add_EnsembleServiceServicer_to_server
    )
    return AisembleServer(config, [binding], on_stop=[close_runner])
