"""Turns a finished job's output into a servable model: a store artifact (atomic, with its manifest) and the
registry entry that names it, with the job's lineage.

The artifact is built through the store's own recipe machinery (StoreBuilder.prepare with a one-off
recipe that copies the job's output): a temporary folder inside the store root, the manifest with
every file's SHA-256, then one rename. A crash at any point leaves the old state or the finished
artifact, never a partial one under the model's name. ResultPublisher runs these steps for a trained
job, registers the entry through the gateway and records how it went (SUCCEEDED, FAILED or CANCELLED).

A registry that cannot be reached is waited for, not a failure: the artifact stays, registration is
retried (1 s, 2 s, 4 s... at most publish_retry_max_delay_s apart, each retry a log line of the job) for
publish_retry_s, and then the job is INTERRUPTED with its artifact kept. Its next attempt (the
scheduler queues it again later, or the next start of the service does) only registers it. A refusal
by the registry (INVALID_ARGUMENT, ALREADY_EXISTS by another job...) fails the job as before.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aisemble.config.models import ModelSpec, model_from_mapping
from aisemble.errors import AisembleError, AlreadyExistsError, InternalError, UnavailableError
from aisemble.rpc.telemetry import context_from_carrier, span
from aisemble.store.builder import PrepareAction, StoreBuilder
from aisemble.store.errors import StoreError
from aisemble.store.model_store import ModelStore
from aisemble.store.recipe import BuildContext, Recipe
from services.finetune.attempts import Attempt, Phase
from services.finetune.limits import FineTuneLimits
from services.finetune.registry_client import RegistryClient
from services.finetune.tracker import JobTracker
from services.finetune.trainers.base import OUTPUT_DIR
from services.finetune.types import Job, JobState, LogSeverity, Metrics, Task
from services.finetune.workspace import Workspace

__all__ = ["Publication", "ResultPublisher", "artifact_job", "registry_entry", "remove_artifact", "write_artifact"]

_TOOLS = ("torch", "transformers", "peft", "tokenizers", "onnx", "onnxruntime-gpu")


def artifact_job(store: ModelStore, name: str) -> str | None:
    """The job id recorded in an artifact's manifest ("" for one no job wrote), None when there is none."""
    try:
        manifest = store.manifest(name)
    except StoreError:
        return ""
    if manifest is None:
        return "" if store.path(name).exists() else None
    return str(manifest.info.get("job_id", ""))


def write_artifact(store: ModelStore, job: Job, output: Path, info: Mapping[str, Any]) -> Path:
    """Put the job's output into the store as `job.result_model_name`; returns the artifact's folder.

    An artifact of that name written by this same job (a restart between writing and registering) is
    kept as it is; one written by anything else is never replaced (ALREADY_EXISTS).
    """
    name = job.result_model_name
    StoreBuilder(store.root, recipes={}).recover()  # an artifact a crash left set aside is back under its name
    owner = artifact_job(store, name)
    if owner == job.job_id:
        return store.path(name)
    if owner is not None:
        raise AlreadyExistsError(
            f"the model store already holds an artifact named '{name}' ({store.path(name)})",
            reason="ARTIFACT_EXISTS",
            metadata={"artifact": name},
        )

    def build(ctx: BuildContext) -> dict[str, Any]:
        for path in sorted(output.rglob("*")):
            if path.is_file():
                ctx.copy(path, path.relative_to(output).as_posix())
        return {**info, "job_id": job.job_id, "data_sha256": job.data_sha256}

    recipe = Recipe(
        name=name,
        version=1,
        build=build,
        tools=_TOOLS,
        description=f"fine-tuned from {job.base_model} by job {job.job_id}",
    )
    [result] = StoreBuilder(store.root, recipes={name: recipe}).prepare([name], force=True, progress=False)
    if result.action == PrepareAction.FAILED:
        raise InternalError(f"could not write the artifact '{name}' into the model store: {result.detail}")
    return result.path


def remove_artifact(store: ModelStore, job: Job) -> None:
    """Delete the job's artifact from the store, if this job wrote it."""
    if artifact_job(store, job.result_model_name) == job.job_id:
        StoreBuilder(store.root, recipes={}).remove(job.result_model_name)


def registry_entry(job: Job, base: ModelSpec, info: Mapping[str, Any], metrics: Mapping[str, float]) -> ModelSpec:
    """The registry entry of the trained model (validated like any models.yaml entry), with its lineage."""
    lineage = {
        "base_model": job.base_model,
        "job_id": job.job_id,
        "data_sha256": job.data_sha256,
        "metrics": {
            **{k: float(v) for k, v in metrics.items()},
            "training_examples": float(job.training_example_count),
            "validation_examples": float(job.validation_example_count),
        },
    }
    entry: dict[str, Any]
    if job.task == Task.CAUSAL_LM:
        entry = {
            "task": "text-generation",
            "provider": "transformers",
            "service": base.service,
            "model_path": job.result_model_name,
            "tags": ["fine-tuned", "lora"],
            "description": (
                f"LoRA adapter on {job.base_model} from fine-tuning job {job.job_id} "
                f"({job.training_example_count} examples)"
            ),
            "params": {"base_model_path": base.model_path},
        }
        for name in ("max_tokens", "max_output_tokens", "cost_per_token", "cost_per_input_token"):
            if getattr(base, name):
                entry[name] = getattr(base, name)
        if base.languages:
            entry["languages"] = list(base.languages)
        if base.domains:
            entry["domains"] = list(base.domains)
    else:
        entry = {
            "task": "text-classification",
            "provider": "onnxruntime",
            "service": "nlp",
            "model_path": job.result_model_name,
            "max_tokens": base.max_tokens or int(info.get("max_length") or job.hyperparameters.max_length),
            "tags": ["fine-tuned", "classifier"],
            "description": (
                f"classifier over {', '.join(job.labels)} trained on {job.base_model} by fine-tuning job "
                f"{job.job_id} ({job.training_example_count} examples)"
            ),
        }
    entry["lineage"] = lineage
    return model_from_mapping(job.result_model_name, entry, where="fine-tuned model")


class Publication(enum.Enum):
    """How publishing a trained job ended."""

    DONE = "done"
    """The job is SUCCEEDED, FAILED or CANCELLED."""
    DEFERRED = "deferred"
    """The job is INTERRUPTED with its artifact stored: the registry could not be reached (or the service is
    stopping); a later attempt registers it."""


class ResultPublisher:
    """Publishes a trained job: the artifact into the store, the entry into the registry (when there is one),
    then SUCCEEDED; a refusal removes the artifact again and fails the job, an unreachable registry is retried."""

    def __init__(
        self,
        tracker: JobTracker,
        workspace: Workspace,
        store: ModelStore,
        registry: RegistryClient | None,
        limits: FineTuneLimits | None = None,
    ) -> None:
        self.tracker = tracker
        self.workspace = workspace
        self.store = store
        self.registry = registry
        self.limits = limits or FineTuneLimits()

    async def publish(self, job: Job, result: dict[str, Any], attempt: Attempt) -> Publication:
        """Write the artifact, register it, and finish the job (SUCCEEDED); a failure removes the artifact.

        DEFERRED: the registry stayed unreachable for publish_retry_s (or the service is stopping); the job
        is INTERRUPTED, its artifact and output kept, and its next attempt only registers it."""
        attempt.phase = Phase.PUBLISHING
        info: dict[str, Any] = result.get("info", {})
        metrics: dict[str, float] = result.get("metrics", {})
        output = self.workspace.job_dir(job.job_id) / OUTPUT_DIR
        try:
            base = model_from_mapping(job.base_model, job.base_spec)
            await asyncio.to_thread(write_artifact, self.store, job, output, info)
            spec = registry_entry(job, base, info, metrics)
        except AisembleError as exc:
            self.tracker.transition(job, JobState.FAILED, f"could not store the result: {exc.message}", failure=True)
            return Publication.DONE
        if attempt.cancel_requested:
            await asyncio.to_thread(self.discard, job)
            self.tracker.transition(job, JobState.CANCELLED, "cancelled while storing the result")
            return Publication.DONE
        attempt.phase = Phase.REGISTERING
        try:
            registered = await self._register_until(job, spec, attempt)
        except AisembleError as exc:
            await asyncio.to_thread(remove_artifact, self.store, job)
            message = f"could not register '{spec.name}': {exc.message}"
            self.tracker.transition(job, JobState.FAILED, message, failure=True)
            return Publication.DONE
        if not registered:
            if attempt.shutdown_requested:
                message = (
                    f"the fine-tuning service was shut down while registering '{spec.name}'; the model is stored "
                    "and is registered at the next start (no training again)"
                )
            else:
                message = (
                    f"the model registry stayed unreachable for {self.limits.publish_retry_s:g} s; the model is "
                    f"stored as '{spec.name}' and is registered by the job's next attempt (in "
                    f"{self.limits.publish_retry_s:g} s, or when the service restarts; no training again)"
                )
            self.tracker.transition(job, JobState.INTERRUPTED, message, failure=True)
            return Publication.DEFERRED
        job.registered_model_name = spec.name if self.registry is not None else ""
        if metrics:
            job.metrics = Metrics(
                step=int(result.get("steps", job.progress.step if job.progress else 0)),
                train_loss=float(metrics.get("train_loss", math.nan)),
                validation_loss=metrics.get("validation_loss"),
                validation_accuracy=metrics.get("validation_accuracy"),
            )
        job.checkpoint_step = 0
        where = (
            f"registered as '{spec.name}'" if self.registry is not None else "no registry configured: not registered"
        )
        self.tracker.log(job, LogSeverity.INFO, f"stored in the model store as '{spec.name}'; {where}")
        self.tracker.transition(job, JobState.SUCCEEDED, f"model '{spec.name}' is ready")
        await asyncio.to_thread(self.workspace.clean_job, job.job_id)
        return Publication.DONE

    def discard(self, job: Job) -> None:
        """Remove what a cancelled job leaves: its artifact (if it wrote one) and its checkpoint and output."""
        remove_artifact(self.store, job)
        self.workspace.clean_job(job.job_id)

    async def _register_until(self, job: Job, spec: ModelSpec, attempt: Attempt) -> bool:
        """Register, retrying while the registry is unreachable; False when it still is after publish_retry_s
        (or the service is stopping). Other errors are raised."""
        if self.registry is None:
            return True
        deadline = time.monotonic() + self.limits.publish_retry_s
        delay = 1.0
        while True:
            try:
                await self._register(job, spec)
                return True
            except UnavailableError as exc:
                why = exc.message
            left = deadline - time.monotonic()
            if left <= 0 or attempt.shutdown_requested:
                return False
            pause = min(delay, left, self.limits.publish_retry_max_delay_s)
            message = f"registry unreachable, retrying in {round(pause, 1):g} s ({why})"
            self.tracker.log(job, LogSeverity.WARNING, message)
            await self.registry.reconnect()  # a fresh channel connects as soon as the registry is back
            if await attempt.pause(pause):
                return False
            delay = min(delay * 2, self.limits.publish_retry_max_delay_s)

    async def _register(self, job: Job, spec: ModelSpec) -> None:
        assert self.registry is not None
        parent = context_from_carrier(job.trace_context)
        with span("finetune.publish", {"aisemble.model": spec.name, "aisemble.job_id": job.job_id}, parent=parent):
            await self._register_in_registry(job, spec)

    async def _register_in_registry(self, job: Job, spec: ModelSpec) -> None:
        assert self.registry is not None
        try:
            await self.registry.register(spec)
        except AlreadyExistsError:
            existing = await self.registry.get(spec.name)
            if existing is None or dict(existing.lineage).get("job_id") != job.job_id:
                raise
            # Registered by this job before a restart (or by a retried call whose answer was lost): done.
