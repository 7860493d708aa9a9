"""Builds the vision service process: its models, runner, servicer and server."""

from __future__ import annotations

from collections.abc import Mapping

from aisemble.config.mesh import MeshConfig
from aisemble.config.models import ModelSpec
from aisemble.environment import apply_offline_defaults
from aisemble.hosting.host import ModelHost
from aisemble.inputs.images import ImageLimits
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding, model_service_server
from aisemble.store.model_store import ModelStore
from aisemble.vision.v1 import vision_service_pb2, vision_service_pb2_grpc
from services.vision.runner import VisionLimits, VisionRunner
from services.vision.servicer import VisionServicer

__all__ = ["SERVICE_NAME", "build_server"]

SERVICE_NAME = vision_service_pb2.DESCRIPTOR.services_by_name["VisionService"].full_name


def build_server(
    config: ServerConfig,
    mesh: MeshConfig | None,
    models: Mapping[str, ModelSpec],
    store: ModelStore | None = None,
    limits: VisionLimits | None = None,
    images: ImageLimits | None = None,
    registry_target: str | None = None,
) -> AisembleServer:
    """An AisembleServer hosting every registry model whose service is 'vision'.

    `images` defaults to ImageLimits.from_env(): file:// URIs are read only under AISEMBLE_IMAGE_ROOTS.
    It follows the gateway's registry (registry_target, default the mesh's gateway) to load models
    registered at run time (for example YOLO-seg weights or an OpenAI image model)."""
    apply_offline_defaults()  # before any backend imports Ultralytics
    host = ModelHost.for_service("vision", models, store)
    runner = VisionRunner(host, limits, images)

    async def close_runner() -> None:
        runner.close()

    binding = ServiceBinding(
        SERVICE_NAME, VisionServicer(runner), vision_service_pb2_grpc.add_VisionServiceServicer_to_server
    )
    return model_service_server(config, "vision", host, [binding], mesh, registry_target, on_stop=[close_runner])
