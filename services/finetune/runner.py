"""The job manager: validates and queues jobs, runs each in a spawned worker process, records every event,
cancels, survives restarts, and publishes results (model store + registry).

Lifecycle of a job
- CreateFineTuneJob checks everything it can before queueing: the request, the examples, the base
  model (through the gateway's registry, else the models given at build time), the hyper-parameters
  and the result's name. The examples are split (seeded) and written into the job's folder.
- At most `max_concurrent_jobs` run at once; the others wait, QUEUED (or INTERRUPTED), oldest first,
  up to `max_queued_jobs`; beyond that CreateFineTuneJob is RESOURCE_EXHAUSTED.
- A running job's worker process trains, reports progress/evaluations/log lines over a pipe (each one
  an event in the journal), and saves a checkpoint every `checkpoint_interval_s` of training.
- When training ends, the output goes into the model store (an atomic artifact with a manifest) and
  is registered through the gateway; then the job is SUCCEEDED. The services that follow the registry
  load it at once.

Cancellation: a QUEUED or INTERRUPTED job is CANCELLED at once; a RUNNING one gets its worker
terminated (SIGTERM: it stops within a fraction of a second), its checkpoint and output are deleted,
and an artifact it had already written to the store is removed. Once the job is registering its
result, cancelling is FAILED_PRECONDITION (the model is about to be served).

Restarts (resume, not restart from scratch): the journal is SQLite; a job found RUNNING when the
service starts was cut off by a crash or kill, and a graceful stop marks its jobs the same way. Such a
job is INTERRUPTED, with the reason in `failure_message`, and queued again; its next worker resumes
from the latest checkpoint (`checkpoint_step`), replaying the same seeded batch order, so the result
is what an uninterrupted run gives. A job whose training had finished (its output complete) is only
published. A job whose worker dies on its own (e.g. killed for memory) is retried the same way, at
most `max_attempts` times in all, then FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import json
import logging
import math
import multiprocessing
import os
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aisemble.config.models import MODEL_NAME_PATTERN, ModelSpec, model_from_mapping, model_to_mapping
from aisemble.errors import (
    AisembleError,
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    ModelNotFoundError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from aisemble.store.model_store import ModelStore
from services.finetune import publisher
from services.finetune.examples import (
    Example,
    ExampleLimits,
    checked_examples,
    examples_sha256,
    parse_jsonl,
    split_examples,
    write_examples,
)
from services.finetune.hyperparameters import resolve_hyperparameters
from services.finetune.journal import JobJournal
from services.finetune.registry_client import RegistryClient
from services.finetune.trainers.base import CHECKPOINT_FILE, OUTPUT_DIR, RESULT_FILE, WorkerRequest
from services.finetune.types import (
    TERMINAL_STATES,
    ClassificationExample,
    Evaluation,
    Event,
    EventPayload,
    Job,
    JobState,
    LogLine,
    LogSeverity,
    Metrics,
    Progress,
    StateChange,
    Task,
    TrainingFile,
)

__all__ = ["FineTuneLimits", "JobRequest", "JobRunner", "UploadHeader"]

log = logging.getLogger(__name__)

#: Where a job's examples live in its folder.
TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "validation.jsonl"
DEFAULT_VALIDATION_SPLIT = 0.1
_RESERVED_NAMES = {"auto"}


@dataclass(frozen=True)
class FineTuneLimits:
    """Service-wide limits and settings."""

    max_concurrent_jobs: int = 1  # two trainings on 2 CPU cores slow each other 10-30x
    max_queued_jobs: int = 16
    max_upload_bytes: int = 64 * 1024 * 1024
    max_total_steps: int = 100_000
    checkpoint_interval_s: float = 30.0
    worker_threads: int = 0  # 0: the CPU count divided by max_concurrent_jobs
    max_attempts: int = 3
    stop_grace_s: float = 5.0
    registry_timeout_s: float = 10.0
    examples: ExampleLimits = field(default_factory=ExampleLimits)


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
class UploadHeader:
    """The first message of an upload."""

    filename: str
    task: Task | None
    size_bytes: int = 0
    sha256: str = ""


class _Phase(enum.Enum):
    TRAINING = "training"
    PUBLISHING = "publishing"
    REGISTERING = "registering"


@dataclass
class _Active:
    """A job this process is running."""

    job_id: str
    task: asyncio.Task[None] | None = None
    process: Any = None
    phase: _Phase = _Phase.TRAINING
    cancel_requested: bool = False


class _Outcome(enum.Enum):
    TRAINED = "trained"
    FAILED = "failed"  # the worker reported why
    WORKER_DIED = "worker died"  # the worker stopped without a word (e.g. killed for memory)
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the service is stopping


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


class JobRunner:
    """Jobs: create, upload, get, list, cancel, watch; the queue, the workers and the publishing."""

    def __init__(
        self,
        data_dir: Path,
        store: ModelStore,
        models: Mapping[str, ModelSpec] | None = None,
        registry: RegistryClient | None = None,
        limits: FineTuneLimits | None = None,
        worker_target: Any = None,
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.models = dict(models or {})
        self.registry = registry
        self.limits = limits or FineTuneLimits()
        if self.limits.max_concurrent_jobs < 1 or self.limits.max_queued_jobs < 0:
            raise ValueError("max_concurrent_jobs must be >= 1 and max_queued_jobs >= 0")
        self.journal: JobJournal | None = None
        self._waiting: list[str] = []
        self._active: dict[str, _Active] = {}
        self._signals: dict[str, asyncio.Event] = {}
        self._create_lock = asyncio.Lock()
        self._stopping = False
        self._lock: Any = None
        self._context = multiprocessing.get_context("spawn")
        if worker_target is None:
            from services.finetune.worker import main as worker_target
        self._worker_target = worker_target

    # --- lifecycle ---
    @property
    def _journal(self) -> JobJournal:
        if self.journal is None:
            raise UnavailableError("the fine-tuning service is not started", retry_after_s=1.0)
        return self.journal

    async def start(self) -> None:
        """Open the journal, mark jobs cut off by a crash INTERRUPTED, queue the unfinished ones, start running."""
        (self.data_dir / "jobs").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "files").mkdir(parents=True, exist_ok=True)
        self._lock = self._lock_data_dir()
        self.journal = JobJournal(self.data_dir / "finetune.db")
        self._stopping = False
        self._waiting = []
        for job in self.journal.unfinished():
            if job.state == JobState.RUNNING:
                reason = (
                    "the fine-tuning service stopped while the job was running (killed or crashed); "
                    + self._resume_note(job)
                )
                self._transition(job, JobState.INTERRUPTED, reason, failure=True)
            self._waiting.append(job.job_id)
        if self._waiting:
            log.info("fine-tuning: %d unfinished jobs queued again", len(self._waiting))
        self._schedule()

    async def stop(self) -> None:
        """Stop the workers (their jobs become INTERRUPTED, to resume at the next start) and close the journal."""
        self._stopping = True
        active = list(self._active.values())
        for job in active:
            if job.process is not None and job.process.is_alive():
                job.process.terminate()
        tasks = [a.task for a in active if a.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.limits.stop_grace_s + 30)
            for task in pending:
                task.cancel()
        if self.registry is not None:
            await self.registry.close()
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def _lock_data_dir(self) -> Any:
        """Hold the data folder for this process: two services on one journal would run each job twice."""
        handle = (self.data_dir / "service.lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FailedPreconditionError(
                f"another fine-tuning service is using the data folder {self.data_dir}",
                reason="DATA_DIR_IN_USE",
                metadata={"data_dir": str(self.data_dir)},
            ) from None
        return handle

    # --- events ---
    def _signal(self, job_id: str) -> asyncio.Event:
        signal = self._signals.get(job_id)
        if signal is None:
            signal = self._signals[job_id] = asyncio.Event()
        return signal

    def _record(self, job: Job, *payloads: EventPayload, new: bool = False) -> list[Event]:
        events = self._journal.save(job, *payloads, new=new)
        signal = self._signals.pop(job.job_id, None)
        if signal is not None:
            signal.set()  # wakes the watchers; the next wait gets a fresh event
        return events

    def _transition(self, job: Job, state: JobState, message: str = "", failure: bool = False) -> None:
        previous = job.state
        job.state = state
        if failure:
            job.failure_message = message
        if job.terminal:
            job.finished_at = time.time()
        self._record(job, StateChange(previous, state, message))

    def _log(self, job: Job, severity: LogSeverity, message: str) -> None:
        self._record(job, LogLine(severity, message))

    @staticmethod
    def _resume_note(job: Job) -> str:
        if job.checkpoint_step:
            return f"it resumes from the checkpoint of step {job.checkpoint_step}"
        return "it starts again from the beginning (no checkpoint yet)"

    # --- reads ---
    def get(self, job_id: str) -> Job:
        """One job; NOT_FOUND when unknown."""
        job = self._journal.job(job_id) if job_id else None
        if job is None:
            raise NotFoundError(
                f"fine-tuning job '{job_id}' does not exist", reason="JOB_NOT_FOUND", metadata={"job_id": job_id}
            )
        return job

    def list_jobs(self, state: JobState | None, offset: int, limit: int) -> tuple[list[Job], bool]:
        """A page of jobs, newest first, and whether more follow."""
        jobs = self._journal.jobs(state, offset, limit + 1)
        return jobs[:limit], len(jobs) > limit

    async def watch(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        """The job's events after `after`, then new ones as they happen; ends after a terminal state's event."""
        self.get(job_id)
        last = after
        while True:
            signal = self._signal(job_id)
            events = self._journal.events(job_id, last)
            for event in events:
                yield event
                last = event.sequence
                if isinstance(event.payload, StateChange) and event.payload.state in TERMINAL_STATES:
                    return
            if not events and self.get(job_id).terminal:
                return
            await signal.wait()

    # --- create ---
    async def create(self, request: JobRequest) -> Job:
        """Validate, then queue a job (QUEUED). Errors: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
        ALREADY_EXISTS, RESOURCE_EXHAUSTED (queue full)."""
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
        async with self._create_lock:
            job_id = _new_id("ftjob")
            name = request.result_model_name or self._default_name(request.base_model, job_id)
            await self._check_name(name)
            waiting = len(self._waiting)
            if len(self._active) >= self.limits.max_concurrent_jobs and waiting >= self.limits.max_queued_jobs:
                raise ResourceExhaustedError(
                    f"{len(self._active)} fine-tuning jobs are running and {waiting} are queued (the limit); "
                    "try again when one has finished",
                    reason="JOB_QUEUE_FULL",
                    retry_after_s=30.0,
                )
            job = Job(
                job_id=job_id,
                state=JobState.QUEUED,
                base_model=request.base_model,
                task=task,
                result_model_name=name,
                hyperparameters=settings,
                data_sha256=data_sha256,
                training_example_count=len(train),
                validation_example_count=len(validation),
                created_at=time.time(),
                base_spec=model_to_mapping(base),
                labels=labels,
            )
            folder = self._job_dir(job_id)
            await asyncio.to_thread(self._write_job_data, folder, train, validation)
            self._record(job, StateChange(None, JobState.QUEUED, "queued"), new=True)
            self._waiting.append(job_id)
        self._schedule()
        return self.get(job_id)

    def _check_request(self, request: JobRequest) -> Task:
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
        file = self._journal.file(request.training_file_id or "")
        if file is None:
            raise NotFoundError(
                f"training file '{request.training_file_id}' does not exist (upload it with UploadTrainingFile)",
                reason="FILE_NOT_FOUND",
                metadata={"file_id": str(request.training_file_id)},
            )
        if file.task != task:
            raise InvalidArgumentError.for_field(
                "training_file_id",
                f"the file holds examples for {file.task.name}, not for a {task.name} job",
                reason="FILE_WRONG_TASK",
            )
        data = await asyncio.to_thread(self._file_path(file.file_id).read_bytes)
        examples = await asyncio.to_thread(parse_jsonl, data, task, self.limits.examples)
        return examples, file.sha256

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
                raise self._not_trainable(name, "it has no artifact in the model store (model_path)")
            folder = self.store.require(spec.model_path)
            if task == Task.CAUSAL_LM:
                if (folder / "adapter_config.json").exists():
                    raise self._not_trainable(name, "it is itself a LoRA adapter; fine-tune its base model instead")
                if not (folder / "config.json").exists() or not any(folder.glob("*.safetensors")):
                    raise self._not_trainable(
                        name, "its artifact has no transformers weights (config.json, *.safetensors)"
                    )
                config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
                return int(spec.max_tokens or config.get("max_position_embeddings") or 0), None
            encoder = folder / "hf" / "config.json"
            if not encoder.exists() or not (folder / "tokenizer.json").exists():
                raise self._not_trainable(name, "its artifact has no torch encoder (hf/) and tokenizer.json to train")
            config = json.loads(encoder.read_text(encoding="utf-8"))
            window = int(spec.max_tokens or config.get("max_position_embeddings") or 0)
            return window, int(config.get("num_hidden_layers") or 0)

        window, layers = await asyncio.to_thread(inspect)
        return spec, window, layers

    @staticmethod
    def _not_trainable(name: str, why: str) -> FailedPreconditionError:
        return FailedPreconditionError(
            f"model '{name}' cannot be fine-tuned here: {why}", reason="MODEL_NOT_TRAINABLE", metadata={"model": name}
        )

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
        if name in self._journal.names_in_use():
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

    def _job_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id

    @staticmethod
    def _write_job_data(folder: Path, train: list[Example], validation: list[Example]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_examples(folder / TRAIN_FILE, train)
        write_examples(folder / VALIDATION_FILE, validation)

    # --- uploads ---
    def _file_path(self, file_id: str) -> Path:
        return self.data_dir / "files" / f"{file_id}.jsonl"

    async def upload(self, header: UploadHeader, chunks: AsyncIterator[bytes]) -> TrainingFile:
        """Receive, check (size, SHA-256, every line) and store a training file."""
        limit = self.limits.max_upload_bytes
        violations: list[FieldViolation] = []
        if not header.filename or "/" in header.filename or "\\" in header.filename:
            violations.append(FieldViolation("header.filename", "is required: a file name without folders"))
        if header.task is None:
            violations.append(FieldViolation("header.task", "is required: the task whose examples the file holds"))
        if header.size_bytes < 0:
            violations.append(FieldViolation("header.size_bytes", "must be >= 0"))
        if header.sha256 and (len(header.sha256) != 64 or any(c not in "0123456789abcdef" for c in header.sha256)):
            violations.append(FieldViolation("header.sha256", "must be 64 lowercase hexadecimal digits"))
        if violations:
            raise InvalidArgumentError(
                "; ".join(f"{v.field}: {v.description}" for v in violations), field_violations=violations
            )
        if header.size_bytes > limit:
            raise self._too_large("header.size_bytes", header.size_bytes)
        data = bytearray()
        async for chunk in chunks:
            data += chunk
            if len(data) > limit:
                raise self._too_large("chunk", len(data), at_least=True)
        if header.size_bytes and len(data) != header.size_bytes:
            raise InvalidArgumentError.for_field(
                "header.size_bytes",
                f"says {header.size_bytes} bytes; {len(data)} arrived",
                reason="SIZE_MISMATCH",
            )
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        if header.sha256 and digest != header.sha256:
            raise InvalidArgumentError.for_field(
                "header.sha256",
                f"says {header.sha256}; the bytes that arrived hash to {digest}",
                reason="CHECKSUM_MISMATCH",
            )
        assert header.task is not None
        examples = await asyncio.to_thread(parse_jsonl, bytes(data), header.task, self.limits.examples)
        file = TrainingFile(
            file_id=_new_id("file"),
            filename=header.filename,
            size_bytes=len(data),
            sha256=digest,
            example_count=len(examples),
            task=header.task,
            created_at=time.time(),
        )
        path = self._file_path(file.file_id)
        partial = path.with_name(path.name + ".partial")
        await asyncio.to_thread(partial.write_bytes, bytes(data))
        os.replace(partial, path)
        self._journal.add_file(file)
        return file

    def _too_large(self, where: str, size: int, at_least: bool = False) -> InvalidArgumentError:
        # INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: the same file sent again cannot succeed.
        what = f"more than {size - 1}" if at_least else str(size)
        return InvalidArgumentError.for_field(
            where,
            f"the file is {what} bytes; the limit is {self.limits.max_upload_bytes} bytes",
            reason="FILE_TOO_LARGE",
            metadata={"limit_bytes": str(self.limits.max_upload_bytes)},
        )

    # --- cancel ---
    async def cancel(self, job_id: str) -> Job:
        """Cancel a QUEUED, RUNNING or INTERRUPTED job; a CANCELLED one is returned unchanged."""
        job = self.get(job_id)
        if job.state == JobState.CANCELLED:
            return job
        if job.terminal:
            raise self._finished(job)
        active = self._active.get(job_id)
        if active is None:
            self._waiting = [j for j in self._waiting if j != job_id]
            await asyncio.to_thread(self._clean_job_dir, job_id)
            self._transition(job, JobState.CANCELLED, f"cancelled while {job.state.value}")
            return job
        if active.phase == _Phase.REGISTERING:
            raise FailedPreconditionError(
                f"job '{job_id}' is registering its result '{job.result_model_name}'; it can no longer be cancelled",
                reason="JOB_REGISTERING",
                metadata={"job_id": job_id},
            )
        active.cancel_requested = True
        if active.process is not None and active.process.is_alive():
            active.process.terminate()
        if active.task is not None:
            await asyncio.shield(active.task)
        job = self.get(job_id)
        if job.state != JobState.CANCELLED:
            raise self._finished(job)
        return job

    @staticmethod
    def _finished(job: Job) -> FailedPreconditionError:
        return FailedPreconditionError(
            f"job '{job.job_id}' has already {job.state.value}; "
            "only queued, running or interrupted jobs can be cancelled",
            reason="JOB_FINISHED",
            metadata={"job_id": job.job_id, "state": job.state.value},
        )

    def _clean_job_dir(self, job_id: str) -> None:
        """Delete what training wrote (checkpoint, output); the examples stay, for the record."""
        folder = self._job_dir(job_id)
        for name in (OUTPUT_DIR, OUTPUT_DIR + ".partial"):
            shutil.rmtree(folder / name, ignore_errors=True)
        for name in (CHECKPOINT_FILE, CHECKPOINT_FILE + ".partial", RESULT_FILE, RESULT_FILE + ".partial"):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()

    # --- running ---
    def _schedule(self) -> None:
        while not self._stopping and self._waiting and len(self._active) < self.limits.max_concurrent_jobs:
            job_id = self._waiting.pop(0)
            active = self._active[job_id] = _Active(job_id)
            active.task = asyncio.create_task(self._run(active), name=f"finetune-{job_id}")

    async def _run(self, active: _Active) -> None:
        job_id = active.job_id
        try:
            job = self.get(job_id)
            job.attempts += 1
            if job.started_at is None:
                job.started_at = time.time()
            result = self._finished_output(job_id)
            if result is not None:
                message = "resuming: training had finished; publishing the result"
            elif job.state == JobState.INTERRUPTED:
                message = "resuming: " + self._resume_note(job)
            else:
                message = "training started"
            job.failure_message = ""
            self._transition(job, JobState.RUNNING, message)
            if result is not None:
                outcome, detail = _Outcome.TRAINED, ""
            elif active.cancel_requested:  # cancelled between scheduling and starting
                outcome, detail = _Outcome.CANCELLED, ""
            else:
                outcome, detail = await self._train(job, active)
            job = self.get(job_id)
            if outcome == _Outcome.TRAINED and result is None:
                result = self._finished_output(job_id)
                if result is None:
                    outcome, detail = _Outcome.FAILED, "the worker reported a result but its output is missing"
            if active.cancel_requested:
                outcome = _Outcome.CANCELLED
            if outcome == _Outcome.TRAINED and result is not None:
                await self._publish(job, result, active)
            elif outcome == _Outcome.CANCELLED:
                await asyncio.to_thread(self._clean_job_dir, job_id)
                self._transition(job, JobState.CANCELLED, "cancelled while running")
            elif outcome in (_Outcome.INTERRUPTED, _Outcome.WORKER_DIED):
                self._interrupted(job, detail)
            else:
                self._transition(job, JobState.FAILED, detail, failure=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("fine-tuning job %s failed", job_id)
            with contextlib.suppress(Exception):
                job = self.get(job_id)
                if not job.terminal:
                    message = exc.message if isinstance(exc, AisembleError) else f"internal error: {type(exc).__name__}"
                    self._transition(job, JobState.FAILED, message, failure=True)
        finally:
            self._active.pop(job_id, None)
            self._schedule()

    def _interrupted(self, job: Job, why: str) -> None:
        """The worker stopped without finishing: queue the job again (at most max_attempts runs in all)."""
        if self._stopping:
            message = "the fine-tuning service was shut down while the job was running; " + self._resume_note(job)
            self._transition(job, JobState.INTERRUPTED, message, failure=True)
            return
        if job.attempts >= self.limits.max_attempts:
            message = f"{why}; gave up after {job.attempts} attempts"
            self._transition(job, JobState.FAILED, message, failure=True)
            return
        self._transition(job, JobState.INTERRUPTED, f"{why}; " + self._resume_note(job), failure=True)
        self._waiting.insert(0, job.job_id)

    def _finished_output(self, job_id: str) -> dict[str, Any] | None:
        """The result of a job whose training finished (output complete), None otherwise."""
        folder = self._job_dir(job_id)
        path = folder / RESULT_FILE
        if not path.exists() or not (folder / OUTPUT_DIR).is_dir():
            return None
        try:
            result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return result

    def _worker_request(self, job: Job) -> WorkerRequest:
        base = job.base_spec
        threads = self.limits.worker_threads or max(1, (os.cpu_count() or 1) // self.limits.max_concurrent_jobs)
        return WorkerRequest(
            job_id=job.job_id,
            task=job.task.value,
            job_dir=str(self._job_dir(job.job_id)),
            base_model=job.base_model,
            base_artifact=str(base["model_path"]),
            base_dir=str(self.store.path(str(base["model_path"]))),
            hyperparameters=job.hyperparameters.to_dict(),
            labels=job.labels,
            checkpoint_interval_s=self.limits.checkpoint_interval_s,
            threads=threads,
            resume=True,
        )

    async def _train(self, job: Job, active: _Active) -> tuple[_Outcome, str]:
        """Run the worker process to the end; what happened and, for a failure, why."""
        loop = asyncio.get_running_loop()
        messages: asyncio.Queue[tuple[Any, ...] | None] = asyncio.Queue()
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=self._worker_target,
            args=(self._worker_request(job), sender),
            name=f"finetune-{job.job_id}",
            daemon=True,
        )
        await asyncio.to_thread(process.start)
        sender.close()
        active.process = process
        if active.cancel_requested or self._stopping:
            process.terminate()
        threading.Thread(
            target=_pump, args=(receiver, loop, messages), name=f"finetune-pipe-{job.job_id}", daemon=True
        ).start()
        outcome: tuple[_Outcome, str] | None = None
        while (message := await messages.get()) is not None:
            kind = message[0]
            if kind == "result":
                outcome = (_Outcome.TRAINED, "")
            elif kind == "failed":
                outcome = (_Outcome.FAILED, str(message[1]))
            else:
                self._on_report(job, message)
        await asyncio.to_thread(process.join, self.limits.stop_grace_s)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, self.limits.stop_grace_s)
        active.process = None
        if active.cancel_requested:
            return _Outcome.CANCELLED, ""
        if outcome is not None and outcome[0] == _Outcome.TRAINED:
            return outcome
        if self._stopping:
            return _Outcome.INTERRUPTED, ""
        if outcome is not None:
            return outcome
        code = process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return _Outcome.WORKER_DIED, f"the training worker stopped unexpectedly ({how})"

    def _on_report(self, job: Job, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "progress":
            progress = Progress(**message[1])
            job.progress = progress
            if progress.train_loss is not None:
                metrics = job.metrics or Metrics(step=progress.step, train_loss=progress.train_loss)
                job.metrics = replace(metrics, step=progress.step, train_loss=progress.train_loss)
            self._record(job, progress)
        elif kind == "evaluation":
            evaluation = Evaluation(**message[1])
            train_loss = job.metrics.train_loss if job.metrics else math.nan
            job.metrics = Metrics(
                step=evaluation.step,
                train_loss=train_loss,
                validation_loss=evaluation.validation_loss,
                validation_accuracy=evaluation.validation_accuracy,
            )
            self._record(job, evaluation)
        elif kind == "log":
            self._record(job, LogLine(LogSeverity(message[1]), str(message[2])))
        elif kind == "checkpoint":
            job.checkpoint_step = int(message[1])
            self._record(job)

    async def _publish(self, job: Job, result: dict[str, Any], active: _Active) -> None:
        """Write the artifact, register it, and finish the job (SUCCEEDED); a failure removes the artifact."""
        active.phase = _Phase.PUBLISHING
        info: dict[str, Any] = result.get("info", {})
        metrics: dict[str, float] = result.get("metrics", {})
        output = self._job_dir(job.job_id) / OUTPUT_DIR
        try:
            base = model_from_mapping(job.base_model, job.base_spec)
            await asyncio.to_thread(publisher.write_artifact, self.store, job, output, info)
            spec = publisher.registry_entry(job, base, info, metrics)
        except AisembleError as exc:
            self._transition(job, JobState.FAILED, f"could not store the result: {exc.message}", failure=True)
            return
        if active.cancel_requested:
            await asyncio.to_thread(publisher.remove_artifact, self.store, job)
            await asyncio.to_thread(self._clean_job_dir, job.job_id)
            self._transition(job, JobState.CANCELLED, "cancelled while storing the result")
            return
        active.phase = _Phase.REGISTERING
        try:
            await self._register(job, spec)
        except AisembleError as exc:
            await asyncio.to_thread(publisher.remove_artifact, self.store, job)
            self._transition(job, JobState.FAILED, f"could not register '{spec.name}': {exc.message}", failure=True)
            return
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
        self._log(job, LogSeverity.INFO, f"stored in the model store as '{spec.name}'; {where}")
        self._transition(job, JobState.SUCCEEDED, f"model '{spec.name}' is ready")
        await asyncio.to_thread(self._clean_job_dir, job.job_id)

    async def _register(self, job: Job, spec: ModelSpec) -> None:
        if self.registry is None:
            return
        try:
            await self.registry.register(spec)
        except AlreadyExistsError:
            existing = await self.registry.get(spec.name)
            if existing is None or dict(existing.lineage).get("job_id") != job.job_id:
                raise
            # Registered by this job before a restart: nothing left to do.


def _pump(
    receiver: Connection, loop: asyncio.AbstractEventLoop, messages: asyncio.Queue[tuple[Any, ...] | None]
) -> None:
    """Thread: forward the worker's messages to the event loop until the pipe closes (then None)."""
    # RuntimeError: the event loop is closed (the service is gone): nobody is listening any more.
    with contextlib.closing(receiver), contextlib.suppress(RuntimeError):
        while True:
            try:
                message = receiver.recv()
            except (EOFError, OSError):
                break
            loop.call_soon_threadsafe(messages.put_nowait, message)
        loop.call_soon_threadsafe(messages.put_nowait, None)
