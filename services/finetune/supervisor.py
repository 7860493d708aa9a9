"""Worker-process supervision: a job's training worker started, its messages recorded, how it ended told apart."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import multiprocessing
import os
import threading
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from aisemble.store.model_store import ModelStore
from services.finetune.attempts import Attempt
from services.finetune.limits import FineTuneLimits
from services.finetune.messages import CheckpointSaved, TrainingFailed, TrainingFinished, WorkerMessage
from services.finetune.tracker import JobTracker
from services.finetune.trainers.base import WorkerRequest
from services.finetune.types import Evaluation, Job, LogLine, Metrics, Progress
from services.finetune.workspace import Workspace

__all__ = ["Outcome", "WorkerSupervisor"]


class Outcome(enum.Enum):
    """How a training attempt ended."""

    TRAINED = "trained"
    FAILED = "failed"  # the worker reported why
    WORKER_DIED = "worker died"  # the worker stopped without a word (e.g. killed for memory)
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the service is stopping


class WorkerSupervisor:
    """Runs each training attempt in a spawned process (worker_target, default worker.main) and listens to it."""

    def __init__(
        self,
        tracker: JobTracker,
        workspace: Workspace,
        store: ModelStore,
        limits: FineTuneLimits,
        worker_target: Any = None,
    ) -> None:
        self.tracker = tracker
        self.workspace = workspace
        self.store = store
        self.limits = limits
        self._context = multiprocessing.get_context("spawn")
        if worker_target is None:
            from services.finetune.worker import main as worker_target
        self._worker_target = worker_target

    def worker_request(self, job: Job) -> WorkerRequest:
        """What the worker of this job needs (its base artifact, settings, folder, threads)."""
        base = job.base_spec
        threads = self.limits.worker_threads or max(1, (os.cpu_count() or 1) // self.limits.max_concurrent_jobs)
        return WorkerRequest(
            job_id=job.job_id,
            task=job.task.value,
            job_dir=str(self.workspace.job_dir(job.job_id)),
            base_model=job.base_model,
            base_artifact=str(base["model_path"]),
            base_dir=str(self.store.path(str(base["model_path"]))),
            hyperparameters=job.hyperparameters.to_dict(),
            labels=job.labels,
            checkpoint_interval_s=self.limits.checkpoint_interval_s,
            threads=threads,
        )

    async def train(self, job: Job, attempt: Attempt) -> tuple[Outcome, str]:
        """Run the worker process to the end; what happened and, for a failure, why."""
        loop = asyncio.get_running_loop()
        messages: asyncio.Queue[WorkerMessage | None] = asyncio.Queue()
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=self._worker_target,
            args=(self.worker_request(job), sender),
            name=f"finetune-{job.job_id}",
            daemon=True,
        )
        await asyncio.to_thread(process.start)
        sender.close()
        attempt.process = process
        if attempt.cancel_requested or attempt.shutdown_requested:
            process.terminate()
        threading.Thread(
            target=_pump, args=(receiver, loop, messages), name=f"finetune-pipe-{job.job_id}", daemon=True
        ).start()
        outcome: tuple[Outcome, str] | None = None
        while (message := await messages.get()) is not None:
            if isinstance(message, TrainingFinished):
                outcome = (Outcome.TRAINED, "")
            elif isinstance(message, TrainingFailed):
                outcome = (Outcome.FAILED, message.message)
            else:
                self._on_report(job, message)
        await asyncio.to_thread(process.join, self.limits.stop_grace_s)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, self.limits.stop_grace_s)
        attempt.process = None
        if attempt.cancel_requested:
            return Outcome.CANCELLED, ""
        if outcome is not None and outcome[0] == Outcome.TRAINED:
            return outcome
        if attempt.shutdown_requested:
            return Outcome.INTERRUPTED, ""
        if outcome is not None:
            return outcome
        code = process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return Outcome.WORKER_DIED, f"the training worker stopped unexpectedly ({how})"

    def _on_report(self, job: Job, message: Progress | Evaluation | LogLine | CheckpointSaved) -> None:
        """A report becomes the job's latest progress or metrics, and an event."""
        if isinstance(message, Progress):
            job.progress = message
            if message.train_loss is not None:
                metrics = job.metrics or Metrics(step=message.step, train_loss=message.train_loss)
                job.metrics = replace(metrics, step=message.step, train_loss=message.train_loss)
            self.tracker.record(job, message)
        elif isinstance(message, Evaluation):
            train_loss = job.metrics.train_loss if job.metrics else math.nan
            job.metrics = Metrics(
                step=message.step,
                train_loss=train_loss,
                validation_loss=message.validation_loss,
                validation_accuracy=message.validation_accuracy,
            )
            self.tracker.record(job, message)
        elif isinstance(message, LogLine):
            self.tracker.record(job, message)
        elif isinstance(message, CheckpointSaved):
            job.checkpoint_step = message.step
            self.tracker.record(job)


def _pump(receiver: Connection, loop: asyncio.AbstractEventLoop, messages: asyncio.Queue[WorkerMessage | None]) -> None:
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
