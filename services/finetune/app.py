"""Builds the fine-tuning service process: its job runner (journal, workers, publishing), servicer and server."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aisemble.config.mesh import MeshConfig
from aisemble.config.models import ModelSpec
from aisemble.config.state import state_dir
from aisemble.finetune.v1 import finetune_service_pb2, finetune_service_pb2_grpc
from aisemble.rpc.client import registry_target as registry_target_of
from aisemble.rpc.server import AisembleServer, ServerConfig, ServiceBinding
from aisemble.rpc.tls import registry_peer
from aisemble.store.model_store import ModelStore, default_store_root
from services.finetune.limits import FineTuneLimits
from services.finetune.registry_client import RegistryClient
from services.finetune.runner import JobRunner
from services.finetune.servicer import FineTuneServicer

__all__ = ["SERVICE_NAME", "build_server", "default_data_dir"]

SERVICE_NAME = finetune_service_pb2.DESCRIPTOR.services_by_name["FineTuneService"].full_name


def default_data_dir() -> Path:
    """<state dir>/finetune: the journal, the jobs' examples and checkpoints, uploads."""
    return state_dir() / "finetune"


def build_server(
    config: ServerConfig,
    mesh: MeshConfig | None,
    models: Mapping[str, ModelSpec] | None = None,
    data_dir: Path | None = None,
    store: ModelStore | None = None,
    registry_target: str | None = None,
    limits: FineTuneLimits | None = None,
    worker_target: Any = None,
) -> AisembleServer:
    """The fine-tuning service. Base models are looked up in the registry service (registry_target, default
    the mesh's registry), else in `models`; results are registered there directly. It hosts no model itself."""
    target = registry_target_of(mesh, registry_target)
    timeout_s = (limits or FineTuneLimits()).registry_timeout_s
    runner = JobRunner(
        data_dir=data_dir or default_data_dir(),
        store=store or ModelStore(default_store_root()),
        models=models,
        registry=RegistryClient(target, timeout_s, registry_peer(mesh, "finetune")) if target else None,
        limits=limits,
        worker_target=worker_target,
    )
    binding = ServiceBinding(
        SERVICE_NAME, FineTuneServicer(runner), finetune_service_pb2_grpc.add_FineTuneServiceServicer_to_server
    )
    return AisembleServer(config, [binding], on_start=[runner.start], on_stop=[runner.stop])
