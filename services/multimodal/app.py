"""Builds the multimodal service process: a composer over channels to the vision and NLP services."""

from __future__ import annotations

from collections.abc import Mapping

from aisemble.config import ConfigError, MeshConfig, ModelSpec
from aisemble.multimodal.v1 import multimodal_service_pb2, multimodal_service_pb2_grpc
from aisemble.server import AisembleServer, ServerConfig, ServiceBinding
from services.multimodal.composer import MultimodalComposer, MultimodalLimits, Upstreams
from services.multimodal.servicer import MultimodalServicer

__all__ = ["SERVICE_NAME", "build_server"]

SERVICE_NAME = multimodal_service_pb2.DESCRIPTOR.services_by_name["MultimodalService"].full_name


def _target(mesh: MeshConfig | None, service: str) -> str:
    """The mesh's address for a service (several replicas: gRPC's ipv4: list), else the gateway's."""
    if mesh is None:
        raise ConfigError(f"the multimodal service needs a {service}_target or a mesh config")
    endpoint = mesh.services.get(service)
    addresses = endpoint.addresses if endpoint is not None else mesh.gateway.addresses
    return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)


def build_server(
    config: ServerConfig,
    mesh: MeshConfig | None,
    models: Mapping[str, ModelSpec],
    vision_target: str | None = None,
    nlp_target: str | None = None,
    limits: MultimodalLimits | None = None,
) -> AisembleServer:
    """An AisembleServer for MultimodalService; it hosts no model.

    vision_target / nlp_target: where VisionService and NlpService answer (the services themselves or a
    gateway); unset, they come from the mesh config (the service's addresses, else the gateway's).
    `models` is accepted for the common build_server signature; the services it calls hold the models.
    """
    limits = limits or MultimodalLimits(max_message_bytes=config.max_message_bytes)
    upstreams = Upstreams(
        vision_target or _target(mesh, "vision"), nlp_target or _target(mesh, "nlp"), limits.max_message_bytes
    )
    binding = ServiceBinding(
        SERVICE_NAME,
        MultimodalServicer(MultimodalComposer(upstreams, limits)),
        multimodal_service_pb2_grpc.add_MultimodalServiceServicer_to_server,
    )
    return AisembleServer(config, [binding], on_stop=[upstreams.close])
