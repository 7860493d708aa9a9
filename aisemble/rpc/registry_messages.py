"""Conversions between registry entries (ModelSpec) and the registry contract's Model message (shared by the
gateway and the services that follow the registry)."""

from __future__ import annotations

from typing import Any, Protocol

from google.protobuf import json_format

from aisemble.common.v1 import common_pb2
from aisemble.config.models import TASKS, ModelSpec, model_from_mapping
from aisemble.registry.v1 import registry_service_pb2 as pb

__all__ = ["TASK_FROM_PROTO", "TASK_TO_PROTO", "Figures", "model_to_proto", "spec_from_proto"]

TASK_TO_PROTO = {task: common_pb2.Task.Value("TASK_" + task.upper().replace("-", "_")) for task in TASKS}
TASK_FROM_PROTO = {value: task for task, value in TASK_TO_PROTO.items()}


class Figures(Protocol):
    """Live figures of a model (gateway.stats.ModelFigures)."""

    requests: int
    errors: int
    output_tokens: int
    cost_total: float
    last_updated: float

    def percentile(self, q: float) -> float | None: ...

    @property
    def tokens_per_second(self) -> float: ...


_HEALTH = {
    "SERVING": pb.MODEL_HEALTH_SERVING,
    "NOT_SERVING": pb.MODEL_HEALTH_NOT_SERVING,
}


def _seconds(duration: Any, seconds: float | None) -> None:
    if seconds is not None:
        duration.FromNanoseconds(int(seconds * 1e9))


def model_to_proto(spec: ModelSpec, health: str = "UNKNOWN", figures: Figures | None = None) -> pb.Model:
    """A registry entry with its live health and figures."""
    model = pb.Model(
        name=spec.name,
        task=TASK_TO_PROTO[spec.task],
        provider=spec.provider,
        model_id=spec.model_id,
        model_path=spec.model_path,
        endpoint=spec.endpoint,
        service=spec.service,
        max_tokens=spec.max_tokens,
        max_output_tokens=spec.max_output_tokens,
        cost_per_token=spec.cost_per_token,
        cost_per_input_token=spec.cost_per_input_token,
        device=spec.device,
        quantization=spec.quantization,
        domains=list(spec.domains),
        languages=list(spec.languages),
        tags=list(spec.tags),
        version=spec.version,
        description=spec.description,
        health=_HEALTH.get(health, pb.MODEL_HEALTH_UNKNOWN),
    )
    if spec.params:
        model.params.update(dict(spec.params))
    lineage = dict(spec.lineage)
    if lineage:
        model.lineage.base_model = str(lineage.get("base_model", ""))
        model.lineage.job_id = str(lineage.get("job_id", ""))
        model.lineage.data_sha256 = str(lineage.get("data_sha256", ""))
        for key, value in dict(lineage.get("metrics") or {}).items():
            model.lineage.metrics[str(key)] = float(value)
    if figures is not None:
        stats = model.stats
        stats.request_count = figures.requests
        stats.error_count = figures.errors
        _seconds(stats.latency_p50, figures.percentile(50))
        _seconds(stats.latency_p95, figures.percentile(95))
        stats.tokens_per_second = figures.tokens_per_second
        stats.output_tokens = figures.output_tokens
        stats.cost_total = figures.cost_total
        if figures.last_updated:
            stats.last_updated.FromNanoseconds(int(figures.last_updated * 1e9))
    return model


def spec_from_proto(model: pb.Model) -> ModelSpec:
    """Validate a Model from a RegisterModel call (same schema as models.yaml; output-only fields ignored)."""
    entry: dict[str, Any] = {}
    if model.task != common_pb2.TASK_UNSPECIFIED:
        entry["task"] = TASK_FROM_PROTO.get(model.task, f"unknown task {model.task}")
    for field in (
        "provider",
        "model_id",
        "model_path",
        "endpoint",
        "service",
        "device",
        "quantization",
        "version",
        "description",
    ):
        value = getattr(model, field)
        if value:
            entry[field] = value
    for field in ("max_tokens", "max_output_tokens"):
        value = getattr(model, field)
        if value:
            entry[field] = value
    for field in ("cost_per_token", "cost_per_input_token"):
        value = getattr(model, field)
        if value:
            entry[field] = value
    for field in ("domains", "languages", "tags"):
        values = list(getattr(model, field))
        if values:
            entry[field] = values
    if model.HasField("params"):
        entry["params"] = json_format.MessageToDict(model.params)
    if model.HasField("lineage"):
        lineage = model.lineage
        entry["lineage"] = {
            "base_model": lineage.base_model,
            "job_id": lineage.job_id,
            "data_sha256": lineage.data_sha256,
            "metrics": dict(lineage.metrics),
        }
    return model_from_mapping(model.name, entry, where="model")
