"""Builds the NLP service process: its models, runner, servicer and server."""

from __future__ import annotations

from collections.abc import Mapping

from aisemble.config.mesh import MeshConfig
from aisemble.config.models import ModelSpec
from aisemble.hosting.host import ModelHost
from aisemble.nlp.v1 import nlp_service_pb2, nlp_service_pb2_grpc
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding, model_service_server
from aisemble.store.model_store import ModelStore
from services.nlp.metrics import NlpCollector
from services.nlp.runner import NlpLimits, NlpRunner
from services.nlp.servicer import NlpServicer

__all__ = ["SERVICE_NAME", "build_server"]

SERVICE_NAME = nlp_service_pb2.DESCRIPTOR.services_by_name["NlpService"].full_name


def build_server(
    config: ServerConfig,
    mesh: MeshConfig | None,
    models: Mapping[str, ModelSpec],
    store: ModelStore | None = None,
    limits: NlpLimits | None = None,
    registry_target: str | None = None,
) -> AisembleServer:
    """An AisembleServer hosting every registry model whose service is 'nlp'.

    It follows the gateway's registry (registry_target, default the mesh's gateway) to load models
    registered at run time (a classifier published by a fine-tuning job, for one)."""
    host = ModelHost.for_service("nlp", models, store)
    runner = NlpRunner(host, limits)
    binding = ServiceBinding(SERVICE_NAME, NlpServicer(runner), nlp_service_pb2_grpc.add_NlpServiceServicer_to_server)
    server = model_service_server(config, "nlp", host, [binding], mesh, registry_target, on_stop=[runner.close])
    server.metrics.registry.register(NlpCollector(runner))
    return server
