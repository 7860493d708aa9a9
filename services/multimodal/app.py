"""Builds the multimodal service process: a composer that calls VisionService and NlpService through the gateway."""

from __future__ import annotations

from collections.abc import Mapping

from aisemble.config.mesh import MeshConfig
from aisemble.config.models import ModelSpec
from aisemble.config.schema import ConfigError
from aisemble.multimodal.v1 import multimodal_service_pb2, multimodal_service_pb2_grpc
from aisemble.rpc.client import gateway_target
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding
from aisemble.rpc.tls import mesh_gateway_peer
from services.multimodal.composer import MultimodalComposer, MultimodalLimits, Upstreams
from services.multimodal.servicer import MultimodalServicer

__all__ = ["SERVICE_NAME", "build_server"]

SERVICE_NAME = multimodal_service_pb2.DESCRIPTOR.services_by_name["MultimodalService"].full_name


def build_server(
    config: ServerConfig,
    mesh: MeshConfig | None,
    models: Mapping[str, ModelSpec],
    vision_target: str | None = None,
    nlp_target: str | None = None,
    limits: MultimodalLimits | None = None,
) -> AisembleServer:
    """An AisembleServer for MultimodalService; it hosts no model.

    Its parts are called through the gateway (the mesh's gateway address), as the ensemble service calls
    its members. vision_target / nlp_target point an area elsewhere (a service itself, which speaks
    the same contract).
    `models` is accepted for the common build_server signature; the services it calls hold the models.
    """
    limits = limits or MultimodalLimits(max_message_bytes=config.max_message_bytes)
    gateway = gateway_target(mesh)
    if not (vision_target or gateway) or not (nlp_target or gateway):
        raise ConfigError("the multimodal service needs a mesh config (the gateway's address) or its targets")
    peer = mesh_gateway_peer(mesh, "multimodal")
    upstreams = Upstreams(vision_target or gateway, nlp_target or gateway, limits.max_message_bytes, peer)  # type: ignore[arg-type]
    binding = ServiceBinding(
        SERVICE_NAME,
        MultimodalServicer(MultimodalComposer(upstreams, limits)),
        multimodal_service_pb2_grpc.add_MultimodalServiceServicer_to_server,
    )
    return AisembleServer(config, [binding], on_stop=[upstreams.close])
