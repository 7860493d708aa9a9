"""Builds the LLM service process: its models, runner, servicer and server."""

from __future__ import annotations

from collections.abc import Mapping

from aisemble.config.mesh import MeshConfig
from aisemble.config.models import ModelSpec
from aisemble.hosting.host import ModelHost
from aisemble.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding, model_service_server
from aisemble.store.model_store import ModelStore
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
    host = ModelHost.for_service("llm", models, store)
    runner = LlmRunner(host, limits)

    async def close_runner() -> None:
        runner.close()

    binding = ServiceBinding(SERVICE_NAME, LlmServicer(runner), llm_service_pb2_grpc.add_LlmServiceServicer_to_server)
    server = model_service_server(config, "llm", host, [binding], mesh, registry_target, on_stop=[close_runner])
    server.metrics.registry.register(LlmCollector(host))
    return server
