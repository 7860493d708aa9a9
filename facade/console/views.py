"""The console's JSON: registry models merged over gateway replicas, routing decisions, fine-tuning jobs and events,
detections; every value as the gateway sent it (the page escapes nothing because it writes text, never markup)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from aisemble.common.v1 import common_pb2
from aisemble.finetune.v1 import finetune_service_pb2 as fpb
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.rpc.registry_messages import TASK_FROM_PROTO
from aisemble.vision.v1 import vision_service_pb2 as vpb

__all__ = ["decision_rows", "detections", "event_of", "job_of", "model_rows"]

_HEALTH = {
    rpb.MODEL_HEALTH_SERVING: "serving",
    rpb.MODEL_HEALTH_NOT_SERVING: "not serving",
    rpb.MODEL_HEALTH_UNKNOWN: "unknown",
}


def _task(value: int) -> str:
    return TASK_FROM_PROTO.get(value, "")


def _ms(duration: Duration) -> float:
    return duration.ToNanoseconds() / 1e6


def _iso(stamp: Timestamp) -> str | None:
    return stamp.ToJsonString() if stamp.seconds or stamp.nanos else None


def _selection(selection: common_pb2.ModelSelection) -> dict[str, Any]:
    return {"model": selection.model, "version": selection.model_version, "rule": selection.rule,
            "reason": selection.reason, "automatic": selection.automatic}  # fmt: skip


def model_rows(replicas: Sequence[Sequence[rpb.Model]]) -> list[dict[str, Any]]:
    """One row per registered model, in the first replica's order, with its figures added up over the gateway
    replicas that each list it: requests, errors, tokens and cost summed; tokens/s over the time all of them
    spent generating; p50 and p95 the slowest replica's (percentiles of separate windows do not add up). Health
    is the best any replica reports."""
    rows: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for models in replicas:
        for model in models:
            stats = model.stats
            row = rows.setdefault(
                model.name,
                {
                    "name": model.name,
                    "task": _task(model.task),
                    "provider": model.provider,
                    "domains": list(model.domains),
                    "languages": list(model.languages),
                    "cost_per_token": model.cost_per_token,
                    "health": "unknown",
                    "requests": 0,
                    "errors": 0,
                    "output_tokens": 0,
                    "cost_total": 0.0,
                    "latency_p50_ms": None,
                    "latency_p95_ms": None,
                    "tokens_per_second": 0.0,
                },
            )
            health = _HEALTH.get(model.health, "unknown")
            if health == "serving" or (health == "not serving" and row["health"] == "unknown"):
                row["health"] = health
            row["requests"] += stats.request_count
            row["errors"] += stats.error_count
            row["output_tokens"] += stats.output_tokens
            row["cost_total"] += stats.cost_total
            if stats.request_count:
                for key, duration in (("latency_p50_ms", stats.latency_p50), ("latency_p95_ms", stats.latency_p95)):
                    row[key] = max(row[key] or 0.0, _ms(duration))
            if stats.tokens_per_second > 0:
                seconds[model.name] = seconds.get(model.name, 0.0) + stats.output_tokens / stats.tokens_per_second
    for name, spent in seconds.items():
        rows[name]["tokens_per_second"] = rows[name]["output_tokens"] / spent if spent > 0 else 0.0
    return list(rows.values())


def decision_rows(replicas: Iterable[Iterable[rpb.RoutingDecision]], limit: int) -> list[dict[str, Any]]:
    """The newest `limit` decisions of every replica together, newest first."""
    merged = sorted(
        (decision for decisions in replicas for decision in decisions),
        key=lambda d: d.time.ToNanoseconds(),
        reverse=True,
    )
    return [
        {
            "time": _iso(d.time),
            "method": d.method,
            "task": _task(d.task),
            "selection": _selection(d.selection),
            "domain": d.detected_domain,
            "domain_source": d.domain_source,
            "language": d.detected_language,
            "candidates": [
                {"model": c.model, "eligible": c.eligible, "score": c.score, "reason": c.reason} for c in d.candidates
            ],
        }
        for d in merged[:limit]
    ]


def _state(value: int) -> str:
    return fpb.FineTuneJobState.Name(value).removeprefix("FINE_TUNE_JOB_STATE_").lower()


def job_of(job: fpb.FineTuneJob) -> dict[str, Any]:
    """A job's row: what it trains, its state and where it is."""
    progress = job.progress
    return {
        "job_id": job.job_id,
        "state": _state(job.state),
        "base_model": job.base_model,
        "task": fpb.FineTuneTask.Name(job.task).removeprefix("FINE_TUNE_TASK_").lower(),
        "result_model_name": job.result_model_name,
        "registered_model_name": job.registered_model_name,
        "created_at": _iso(job.created_at),
        "finished_at": _iso(job.finished_at),
        "step": progress.step,
        "total_steps": progress.total_steps,
        "fraction": progress.fraction,
        "train_loss": job.metrics.train_loss if job.HasField("metrics") else None,
        "validation_loss": (
            job.metrics.validation_loss if job.HasField("metrics") and job.metrics.HasField("validation_loss") else None
        ),
        "failure_message": job.failure_message,
    }


def event_of(event: fpb.FineTuneEvent) -> dict[str, Any]:
    """One event of a job's watch: its sequence, time, kind, and the kind's figures."""
    body: dict[str, Any] = {"sequence": event.sequence, "time": _iso(event.time), "kind": event.WhichOneof("kind")}
    if event.HasField("progress"):
        p = event.progress
        body.update(step=p.step, total_steps=p.total_steps, epoch=p.epoch, fraction=p.fraction)
        body["train_loss"] = p.train_loss if p.HasField("train_loss") else None
    elif event.HasField("evaluation"):
        e = event.evaluation
        body.update(step=e.step, epoch=e.epoch, validation_loss=e.validation_loss)
        body["validation_accuracy"] = e.validation_accuracy if e.HasField("validation_accuracy") else None
    elif event.HasField("state_change"):
        body.update(state=_state(event.state_change.state), message=event.state_change.message)
    elif event.HasField("log"):
        body.update(message=event.log.message)
    return body


def detections(reply: vpb.DetectResponse) -> dict[str, Any]:
    """Boxes in the image's pixels, with their class and score, and the model that found them."""
    return {
        "image_width": reply.image_width,
        "image_height": reply.image_height,
        "selection": _selection(reply.selection),
        "detections": [
            {
                "class_name": d.class_name,
                "class_id": d.class_id,
                "score": d.score,
                "box": {"x_min": d.box.x_min, "y_min": d.box.y_min, "x_max": d.box.x_max, "y_max": d.box.y_max},
            }
            for d in reply.detections
        ],
    }
