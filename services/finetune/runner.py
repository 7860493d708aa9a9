"""The fine-tuning job runner: the transport-neutral core the servicer calls, one method per RPC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO, Any

from aisemble.config.models import ModelSpec
from aisemble.store.model_store import ModelStore
from services.finetune.attempts import Attempt
from services.finetune.intake import JobIntake, JobRequest
from services.finetune.journal import JobJournal
from services.finetune.limits import FineTuneLimits
from services.finetune.publisher import ResultPublisher
from services.finetune.registry_client import RegistryClient
from services.finetune.scheduler import Scheduler
from services.finetune.supervisor import WorkerSupervisor
from services.finetune.tracker import JobTracker
from services.finetune.types import Event, Job, JobState, TrainingFile
from services.finetune.uploads import TrainingFiles, UploadHeader
from services.finetune.workspace import Workspace

__all__ = ["FineTuneLimits", "JobRequest", "JobRunner", "UploadHeader"]


class JobRunner:
    """Jobs: create, upload, get, list, cancel, watch; the queue, the workers and the publishing behind them.

    Lifecycle of a job
    - create() checks everything it can before queueing (intake.py): the request, the examples, the
      base model (through the gateway's registry, else the models given at build time), the
      hyper-parameters and the result's name. The examples are split (seeded) and written into the
      job's folder.
    - At most `max_concurrent_jobs` run at once; the others wait, QUEUED (or INTERRUPTED), oldest
      first, up to `max_queued_jobs`; beyond that create() is RESOURCE_EXHAUSTED (scheduler.py).
    - A running job's worker process trains, reports progress/evaluations/log lines over a pipe (each
      one an event in the journal), and saves a checkpoint every `checkpoint_interval_s` of training
      (supervisor.py, worker.py, messages.py).
    - When training ends, the output goes into the model store (an atomic artifact with a manifest)
      and is registered through the gateway; then the job is SUCCEEDED (publisher.py). The services
      that follow the registry load it at once. While the registry is unreachable, registering is
      retried for `publish_retry_s` (a log line each time); then the job is INTERRUPTED with its
      artifact kept, and queued again after as long (or at the next start): it only registers then.

    Cancellation: a QUEUED or INTERRUPTED job is CANCELLED at once; a RUNNING one gets its worker
    terminated (SIGTERM: it stops within a fraction of a second), its checkpoint and output are
    deleted, and an artifact it had already written to the store is removed. Once the job is
    registering its result, cancelling is FAILED_PRECONDITION (the model is about to be served).

    Restarts (resume, not restart from scratch): the journal is SQLite; a job found RUNNING when the
    service starts was cut off by a crash or kill, and a graceful stop marks its jobs the same way.
    Such a job is INTERRUPTED, with the reason in `failure_message`, and queued again; its next worker
    resumes from the latest checkpoint (`checkpoint_step`), replaying the same seeded batch order, so
    the result is what an uninterrupted run gives. A job whose training had finished (its output
    complete) is only published. A job whose worker dies on its own (e.g. killed for memory) is
    retried the same way, at most `max_attempts` times in all, then FAILED.
    """

    def __init__(
        self,
        data_dir: Path,
        store: ModelStore,
        models: Mapping[str, ModelSpec] | None = None,
        registry: RegistryClient | None = None,
        limits: FineTuneLimits | None = None,
        worker_target: Any = None,
    ) -> None:
        self.limits = limits = limits or FineTuneLimits()
        if limits.max_concurrent_jobs < 1 or limits.max_queued_jobs < 0:
            raise ValueError("max_concurrent_jobs must be >= 1 and max_queued_jobs >= 0")
        self.registry = registry
        self.workspace = Workspace(data_dir)
        self.tracker = JobTracker()
        self.files = TrainingFiles(self.tracker, self.workspace, limits)
        self.scheduler = Scheduler(
            self.tracker,
            self.workspace,
            WorkerSupervisor(self.tracker, self.workspace, store, limits, worker_target),
            ResultPublisher(self.tracker, self.workspace, store, registry, limits),
            limits,
        )
        self.intake = JobIntake(
            self.tracker, self.workspace, self.files, self.scheduler, store, models or {}, registry, limits
        )
        self._lock: IO[Any] | None = None

    @property
    def _journal(self) -> JobJournal:
        """The open journal (UNAVAILABLE before start)."""
        return self.tracker.journal

    @property
    def _active(self) -> dict[str, Attempt]:
        """The jobs running in this process, by id."""
        return self.scheduler.active

    # --- lifecycle ---
    async def start(self) -> None:
        """Open the journal, mark jobs cut off by a crash INTERRUPTED, queue the unfinished ones, start running."""
        self.workspace.create()
        self._lock = self.workspace.lock()
        self.workspace.clean_uploads()
        self.tracker.open(self.workspace.journal_path)
        self.scheduler.recover()

    async def stop(self) -> None:
        """Stop the workers (their jobs become INTERRUPTED, to resume at the next start) and close the journal."""
        await self.scheduler.stop()
        if self.registry is not None:
            await self.registry.close()
        self.tracker.close()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    # --- the RPCs ---
    async def create(self, request: JobRequest) -> Job:
        """Validate, then queue a job (QUEUED). Errors: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
        ALREADY_EXISTS, RESOURCE_EXHAUSTED (queue full)."""
        return await self.intake.create(request)

    async def upload(self, header: UploadHeader, chunks: AsyncIterator[bytes]) -> TrainingFile:
        """Receive, check (size, SHA-256, every line) and store a training file."""
        return await self.files.receive(header, chunks)

    def get(self, job_id: str) -> Job:
        """One job; NOT_FOUND when unknown."""
        return self.tracker.get(job_id)

    def list_jobs(self, state: JobState | None, offset: int, limit: int) -> tuple[list[Job], bool]:
        """A page of jobs, newest first, and whether more follow."""
        return self.tracker.list_jobs(state, offset, limit)

    def watch(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        """The job's events after `after`, then new ones as they happen; ends after a terminal state's event."""
        return self.tracker.watch(job_id, after)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a QUEUED, RUNNING or INTERRUPTED job; a CANCELLED one is returned unchanged."""
        return await self.scheduler.cancel(job_id)
