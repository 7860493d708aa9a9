"""Job intake: a CreateFineTuneJob request checked (examples, base model, hyper-parameters, name), then queued."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aisemble.config.models import MODEL_NAME_PATTERN, ModelSpec, model_to_mapping
from aisemble.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    ModelNotFoundError,
    UnavailableError,
)
from aisemble.resolution import AUTO
from aisemble.rpc.telemetry import current_trace_context
from aisemble.store.model_store import ModelStore
from services.finetune.examples import Example, checked_examples, examples_sha256, split_examples
from services.finetune.hyperparameters import resolve_hyperparameters
from services.finetune.limits import FineTuneLimits
from services.finetune.registry_client import RegistryClient
from services.finetune.scheduler import Scheduler
from services.finetune.tracker import JobTracker
from services.finetune.types import ClassificationExample, Hyperparameters, Job, JobState, StateChange, Task
from services.finetune.uploads import TrainingFiles
from services.finetune.workspace import Workspace

__all__ = ["DEFAULT_VALIDATION_SPLIT", "JobIntake", "JobRequest"]

log = logging.getLogger(__name__)

DEFAULT_VALIDATION_SPLIT = 0.1
_RESERVED_NAMES = {AUTO}


@dataclass(frozen=True)
class JobRequest:
    """A CreateFineTuneJob request in domain terms (what the caller set; None: unset)."""

    base_model: str
    task: Task | None
    inline_examples: list[dict[str, Any]] | None = None
    inline_field: str = "examples"
    training_file_id: str | None = None
    validation_split: float | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    result_model_name: str = ""


@dataclass(frozen=True)
class _Checked:
    """What a request's checks produced: everything a job needs but its id and result name."""

    task: Task
    base: ModelSpec
    settings: Hyperparameters
    data_sha256: str
    train: list[Example]
    validation: list[Example]
    labels: tuple[str, ...]


class JobIntake:
    """Checks requests and queues their jobs; base models come from the registry, else the build-time models."""

    def __init__(
        self,
        tracker: JobTracker,
        workspace: Workspace,
        files: TrainingFiles,
        scheduler: Scheduler,
        store: ModelStore,
        models: Mapping[str, ModelSpec],
        registry: RegistryClient | None,
        limits: FineTuneLimits,
    ) -> None:
        self.tracker = tracker
        self.workspace = workspace
        self.files = files
        self.scheduler = scheduler
        self.store = store
        self.models = dict(models)
        self.registry = registry
        self.limits = limits
        self._lock = asyncio.Lock()

    async def create(self, request: JobRequest) -> Job:
        """Validate, then queue a job (QUEUED). Errors: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
        ALREADY_EXISTS, RESOURCE_EXHAUSTED (queue full)."""
        checked = await self._check(request)
        async with self._lock:
            job_id = f"ftjob-{secrets.token_hex(8)}"
            name = request.result_model_name or self._default_name(request.base_model, job_id)
            await self._check_name(name)
            self.scheduler.check_room()
            job = Job(
                job_id=job_id,
                state=JobState.QUEUED,
                base_model=request.base_model,
                task=checked.task,
                result_model_name=name,
                hyperparameters=checked.settings,
                data_sha256=checked.data_sha256,
                training_example_count=len(checked.train),
                validation_example_count=len(checked.validation),
                created_at=time.time(),
                base_spec=model_to_mapping(checked.base),
                labels=checked.labels,
                trace_context=current_trace_context(),
            )
            await asyncio.to_thread(self.workspace.write_examples, job_id, checked.train, checked.validation)
            self.tracker.record(job, StateChange(None, JobState.QUEUED, "queued"), new=True)
            self.scheduler.enqueue(job_id)
        self.scheduler.schedule()
        return self.tracker.get(job_id)

    async def _check(self, request: JobRequest) -> _Checked:
        """Every check that needs no lock: the request, its examples, the base model, the hyper-parameters."""
        task = self._check_request(request)
        examples, data_sha256 = await self._examples(request, task)
        split = DEFAULT_VALIDATION_SPLIT if request.validation_split is None else request.validation_split
        base, context_window, encoder_layers = await self._base(request.base_model, task)
        settings = resolve_hyperparameters(task, request.hyperparameters, context_window, encoder_layers)
        train, validation = split_examples(examples, split, settings.seed)
        steps = math.ceil(len(train) / settings.batch_size) * settings.epochs
        if steps > self.limits.max_total_steps:
            raise InvalidArgumentError.for_field(
                "hyperparameters.epochs",
                f"{settings.epochs} epochs of {len(train)} examples in batches of {settings.batch_size} are {steps} "
                f"steps; at most {self.limits.max_total_steps}",
                reason="TOO_MANY_STEPS",
            )
        labels = tuple(sorted({e.label for e in examples if isinstance(e, ClassificationExample)}))
        return _Checked(task, base, settings, data_sha256, train, validation, labels)

    @staticmethod
    def _check_request(request: JobRequest) -> Task:
        violations: list[FieldViolation] = []
        if not request.base_model:
            violations.append(FieldViolation("base_model", "is required: the registry name of the model to start from"))
        if request.task is None:
            violations.append(FieldViolation("task", "is required: FINE_TUNE_TASK_CAUSAL_LM or _TEXT_CLASSIFICATION"))
        if request.inline_examples is None and not request.training_file_id:
            violations.append(
                FieldViolation("training_data", "is required: inline examples or a training_file_id from an upload")
            )
        split = request.validation_split
        if split is not None and not (math.isfinite(split) and 0 <= split < 0.5):
            violations.append(FieldViolation("validation_split", f"must be in [0, 0.5) (got {split:g})"))
        name = request.result_model_name
        if name and (not MODEL_NAME_PATTERN.match(name) or name in _RESERVED_NAMES):
            violations.append(
                FieldViolation(
                    "result_model_name",
                    f"{name!r} is not a usable model name: {MODEL_NAME_PATTERN.pattern}, not 'auto'",
                )
            )
        if violations:
            raise InvalidArgumentError(
                "; ".join(f"{v.field}: {v.description}" for v in violations), field_violations=violations
            )
        assert request.task is not None
        return request.task

    async def _examples(self, request: JobRequest, task: Task) -> tuple[list[Example], str]:
        """The checked examples and the SHA-256 of the data as the job reads it."""
        if request.inline_examples is not None:
            examples = checked_examples(task, request.inline_examples, request.inline_field, self.limits.examples)
            return examples, examples_sha256(examples)
        return await self.files.examples(request.training_file_id or "", task)

    async def _lookup(self, name: str) -> ModelSpec | None:
        if self.registry is not None:
            try:
                return await self.registry.get(name)
            except UnavailableError:
                if name not in self.models:
                    raise
                log.warning("registry unreachable; using the build-time entry of %s", name)
        return self.models.get(name)

    async def _base(self, name: str, task: Task) -> tuple[ModelSpec, int, int | None]:
        """The base model's entry, context window and encoder layer count; checks it can be trained."""
        spec = await self._lookup(name)
        if spec is None:
            raise ModelNotFoundError(name, known=[] if self.registry is not None else list(self.models))
        wanted = ("text-generation",) if task == Task.CAUSAL_LM else ("embedding", "text-classification")
        if spec.task not in wanted:
            raise FailedPreconditionError(
                f"model '{name}' is a {spec.task} model; a {task.name} job needs a {' or '.join(wanted)} model",
                reason="MODEL_WRONG_TASK",
                metadata={"model": name, "task": spec.task},
            )

        def inspect() -> tuple[int, int | None]:
            if not spec.model_path:
                raise _not_trainable(name, "it has no artifact in the model store (model_path)")
            folder = self.store.require(spec.model_path)
            if task == Task.CAUSAL_LM:
                if (folder / "adapter_config.json").exists():
                    raise _not_trainable(name, "it is itself a LoRA adapter; fine-tune its base model instead")
                if not (folder / "config.json").exists() or not any(folder.glob("*.safetensors")):
                    raise _not_trainable(name, "its artifact has no transformers weights (config.json, *.safetensors)")
                config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
                return int(spec.max_tokens or config.get("max_position_embeddings") or 0), None
            encoder = folder / "hf" / "config.json"
            if not encoder.exists() or not (folder / "tokenizer.json").exists():
                raise _not_trainable(name, "its artifact has no torch encoder (hf/) and tokenizer.json to train")
            config = json.loads(encoder.read_text(encoding="utf-8"))
            window = int(spec.max_tokens or config.get("max_position_embeddings") or 0)
            return window, int(config.get("num_hidden_layers") or 0)

        window, layers = await asyncio.to_thread(inspect)
        return spec, window, layers

    @staticmethod
    def _default_name(base: str, job_id: str) -> str:
        return f"{base[:40].rstrip('.-_')}-ft-{job_id.rsplit('-', 1)[-1][:8]}"

    async def _check_name(self, name: str) -> None:
        """ALREADY_EXISTS when the name is registered, reserved by another unfinished job, or in the store."""
        taken = await self._lookup(name) if self.registry is not None else self.models.get(name)
        if taken is not None:
            raise AlreadyExistsError(
                f"model '{name}' is already registered; choose another result_model_name",
                reason="MODEL_EXISTS",
                metadata={"model": name},
            )
        if name in self.tracker.journal.names_in_use():
            raise AlreadyExistsError(
                f"another unfinished fine-tuning job will register '{name}'; choose another result_model_name",
                reason="MODEL_NAME_RESERVED",
                metadata={"model": name},
            )
        if self.store.path(name).exists():
            raise AlreadyExistsError(
                f"the model store already holds an artifact named '{name}'; choose another result_model_name",
                reason="ARTIFACT_EXISTS",
                metadata={"model": name},
            )


def _not_trainable(name: str, why: str) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"model '{name}' cannot be fine-tuned here: {why}", reason="MODEL_NOT_TRAINABLE", metadata={"model": name}
    )
