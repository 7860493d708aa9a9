"""The job queue: at most max_concurrent_jobs run, the others wait oldest first; cancel; each run's outcome applied.

A job whose result is stored but could not be registered (the registry unreachable) is INTERRUPTED and
queued again after publish_retry_s, freeing its slot for the others meanwhile (`deferred`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aisemble.errors import AisembleError, FailedPreconditionError, ResourceExhaustedError
from services.finetune.attempts import Attempt, Phase
from services.finetune.limits import FineTuneLimits
from services.finetune.publisher import Publication, ResultPublisher
from services.finetune.supervisor import Outcome, WorkerSupervisor
from services.finetune.tracker import JobTracker, resume_note
from services.finetune.types import Job, JobState
from services.finetune.workspace import Workspace

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)


class Scheduler:
    """The waiting jobs and the attempts running now (each an asyncio task that trains, then publishes)."""

    def __init__(
        self,
        tracker: JobTracker,
        workspace: Workspace,
        supervisor: WorkerSupervisor,
        publisher: ResultPublisher,
        limits: FineTuneLimits,
    ) -> None:
        self.tracker = tracker
        self.workspace = workspace
        self.supervisor = supervisor
        self.publisher = publisher
        self.limits = limits
        self.waiting: list[str] = []
        self.active: dict[str, Attempt] = {}
        self.deferred: dict[str, asyncio.TimerHandle] = {}
        """INTERRUPTED jobs waiting to retry registering their stored result, with the timer that queues them."""
        self.stopping = False

    # --- lifecycle ---
    def recover(self) -> None:
        """Queue the journal's unfinished jobs again (a RUNNING one was cut off: INTERRUPTED first), then run."""
        self.stopping = False
        self.waiting = []
        for job in self.tracker.journal.unfinished():
            if job.state == JobState.RUNNING:
                reason = (
                    "the fine-tuning service stopped while the job was running (killed or crashed); " + resume_note(job)
                )
                self.tracker.transition(job, JobState.INTERRUPTED, reason, failure=True)
            self.waiting.append(job.job_id)
        if self.waiting:
            log.info("fine-tuning: %d unfinished jobs queued again", len(self.waiting))
        self.schedule()

    async def stop(self) -> None:
        """Stop the workers and wait for their attempts to end (their jobs become INTERRUPTED)."""
        self.stopping = True
        for timer in self.deferred.values():
            timer.cancel()  # the next start queues them again (they are INTERRUPTED)
        self.deferred.clear()
        attempts = list(self.active.values())
        for attempt in attempts:
            attempt.request_shutdown()
            if attempt.process is not None and attempt.process.is_alive():
                attempt.process.terminate()
        tasks = [a.task for a in attempts if a.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.limits.stop_grace_s + 30)
            for task in pending:
                task.cancel()

    # --- the queue ---
    def check_room(self) -> None:
        """RESOURCE_EXHAUSTED (JOB_QUEUE_FULL) when every slot runs and the queue is at its limit."""
        waiting = len(self.waiting)
        if len(self.active) >= self.limits.max_concurrent_jobs and waiting >= self.limits.max_queued_jobs:
            raise ResourceExhaustedError(
                f"{len(self.active)} fine-tuning jobs are running and {waiting} are queued (the limit); "
                "try again when one has finished",
                reason="JOB_QUEUE_FULL",
                retry_after_s=30.0,
            )

    def enqueue(self, job_id: str) -> None:
        """Put a job at the end of the queue (schedule() starts it when a slot is free)."""
        self.waiting.append(job_id)

    def schedule(self) -> None:
        """Start waiting jobs while slots are free."""
        while not self.stopping and self.waiting and len(self.active) < self.limits.max_concurrent_jobs:
            job_id = self.waiting.pop(0)
            attempt = self.active[job_id] = Attempt(job_id)
            attempt.task = asyncio.create_task(self._run(attempt), name=f"finetune-{job_id}")

    # --- cancel ---
    async def cancel(self, job_id: str) -> Job:
        """Cancel a QUEUED, RUNNING or INTERRUPTED job; a CANCELLED one is returned unchanged."""
        job = self.tracker.get(job_id)
        if job.state == JobState.CANCELLED:
            return job
        if job.terminal:
            raise _finished(job)
        attempt = self.active.get(job_id)
        if attempt is None:
            self.waiting = [j for j in self.waiting if j != job_id]
            timer = self.deferred.pop(job_id, None)
            if timer is not None:
                timer.cancel()
            await asyncio.to_thread(self.publisher.discard, job)  # the stored result of a deferred one too
            self.tracker.transition(job, JobState.CANCELLED, f"cancelled while {job.state.value}")
            return job
        if attempt.phase == Phase.REGISTERING:
            raise FailedPreconditionError(
                f"job '{job_id}' is registering its result '{job.result_model_name}'; it can no longer be cancelled",
                reason="JOB_REGISTERING",
                metadata={"job_id": job_id},
            )
        attempt.cancel_requested = True
        if attempt.process is not None and attempt.process.is_alive():
            attempt.process.terminate()
        if attempt.task is not None:
            await asyncio.shield(attempt.task)
        job = self.tracker.get(job_id)
        if job.state != JobState.CANCELLED:
            raise _finished(job)
        return job

    # --- one attempt ---
    async def _run(self, attempt: Attempt) -> None:
        job_id = attempt.job_id
        try:
            job = self.tracker.get(job_id)
            job.attempts += 1
            if job.started_at is None:
                job.started_at = time.time()
            result = self.workspace.finished_output(job_id)
            if result is not None:
                message = "resuming: training had finished; publishing the result"
            elif job.state == JobState.INTERRUPTED:
                message = "resuming: " + resume_note(job)
            else:
                message = "training started"
            job.failure_message = ""
            self.tracker.transition(job, JobState.RUNNING, message)
            if result is not None:
                outcome, detail = Outcome.TRAINED, ""
            elif attempt.cancel_requested:  # cancelled between scheduling and starting
                outcome, detail = Outcome.CANCELLED, ""
            else:
                outcome, detail = await self.supervisor.train(job, attempt)
            job = self.tracker.get(job_id)
            if outcome == Outcome.TRAINED and result is None:
                result = self.workspace.finished_output(job_id)
                if result is None:
                    outcome, detail = Outcome.FAILED, "the worker reported a result but its output is missing"
            if attempt.cancel_requested:
                outcome = Outcome.CANCELLED
            if outcome == Outcome.TRAINED and result is not None:
                if await self.publisher.publish(job, result, attempt) == Publication.DEFERRED:
                    self._defer(job_id)
            elif outcome == Outcome.CANCELLED:
                await asyncio.to_thread(self.workspace.clean_job, job_id)
                self.tracker.transition(job, JobState.CANCELLED, "cancelled while running")
            elif outcome in (Outcome.INTERRUPTED, Outcome.WORKER_DIED):
                self._interrupted(job, detail)
            else:
                self.tracker.transition(job, JobState.FAILED, detail, failure=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("fine-tuning job %s failed", job_id)
            with contextlib.suppress(Exception):
                job = self.tracker.get(job_id)
                if not job.terminal:
                    message = exc.message if isinstance(exc, AisembleError) else f"internal error: {type(exc).__name__}"
                    self.tracker.transition(job, JobState.FAILED, message, failure=True)
        finally:
            self.active.pop(job_id, None)
            self.schedule()

    def _defer(self, job_id: str) -> None:
        """Queue a job again after publish_retry_s (its result waits to be registered); at the next start if
        the service stops first."""
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        self.deferred[job_id] = loop.call_later(self.limits.publish_retry_s, self._requeue, job_id)

    def _requeue(self, job_id: str) -> None:
        self.deferred.pop(job_id, None)
        if self.stopping or job_id in self.active or job_id in self.waiting:
            return
        try:
            job = self.tracker.get(job_id)
        except AisembleError:  # gone, or the journal is closed (the service is stopping)
            return
        if job.state == JobState.INTERRUPTED:
            self.waiting.append(job_id)
            self.schedule()

    def _interrupted(self, job: Job, why: str) -> None:
        """The worker stopped without finishing: queue the job again (at most max_attempts runs in all)."""
        if self.stopping:
            message = "the fine-tuning service was shut down while the job was running; " + resume_note(job)
            self.tracker.transition(job, JobState.INTERRUPTED, message, failure=True)
            return
        if job.attempts >= self.limits.max_attempts:
            message = f"{why}; gave up after {job.attempts} attempts"
            self.tracker.transition(job, JobState.FAILED, message, failure=True)
            return
        self.tracker.transition(job, JobState.INTERRUPTED, f"{why}; " + resume_note(job), failure=True)
        self.waiting.insert(0, job.job_id)


def _finished(job: Job) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"job '{job.job_id}' has already {job.state.value}; only queued, running or interrupted jobs can be cancelled",
        reason="JOB_FINISHED",
        metadata={"job_id": job.job_id, "state": job.state.value},
    )
