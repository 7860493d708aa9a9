"""Builds the LLM service process: its models, runner, servicer and server."""

from __future__ import annotations

from collections.abc import Mapping

from aisemble.config.mesh import MeshConfig
from aisemble.config.models import ModelSpec
from aisemble.hosting.follower import follow_registry_hooks
from aisemble.hosting.host import ModelHost
from aisemble.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding
from aisemble.store.model_store import ModelStore, default_store_root
from services.llm.metrics import LlmCollector
from services.llm.runner import LlmLimits, LlmRunner
from services.llm.servicer import LlmServicer

__all__ = ["build_server"]

SERVICE_NAME = llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name


def build_server(
    config: ServerConfig,
    mesh: MeshConfig | None,
    models: Mapping[str, ModelSpec],
    store: ModelStore | None = None,
    limits: LlmLimits | None = None,
    registry_target: str | None = None,
) -> AisembleServer:
    """An AisembleServer hosting every registry model whose service is 'llm'.

    It follows the gateway's registry (registry_target, default the mesh's gateway) to load models
    registered at run time."""
    hosted = [spec for spec in models.values() if spec.service == "llm"]
    host = ModelHost(hosted, store or ModelStore(default_store_root()))
    runner = LlmRunner(host, limits)

    async def close_runner() -> None:
        runner.close()

    binding = ServiceBinding(SERVICE_NAME, LlmServicer(runner), llm_service_pb2_grpc.add_LlmServiceServicer_to_server)
    target = registry_target or (mesh.gateway.addresses[0] if mesh is not None else None)
    on_start, on_stop = follow_registry_hooks(target, "llm", host)
    server = AisembleServer(config, [binding], model_host=host, on_start=on_start, on_stop=[*on_stop, close_runner])
    server.metrics.registry.register(LlmCollector(host))
    return server
