"""Job records as the service keeps them: changes written to the journal with their events, watchers woken."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aisemble.errors import NotFoundError, UnavailableError
from services.finetune.journal import JobJournal
from services.finetune.types import (
    TERMINAL_STATES,
    Event,
    EventPayload,
    Job,
    JobState,
    LogLine,
    LogSeverity,
    StateChange,
)

__all__ = ["EVENT_PAGE", "JobTracker", "resume_note"]

#: At most this many events of a job are read into memory at once for a watcher (a late one pages through).
EVENT_PAGE = 256


def resume_note(job: Job) -> str:
    """Where an interrupted job's next worker starts."""
    if job.checkpoint_step:
        return f"it resumes from the checkpoint of step {job.checkpoint_step}"
    return "it starts again from the beginning (no checkpoint yet)"


class JobTracker:
    """The journal (open while the service runs) and a wake-up per watched job.

    Nothing here grows with the number of jobs: a job has a wake-up signal and a watcher count only while
    someone watches it (the last watcher to leave removes both), and a watcher holds at most EVENT_PAGE
    events at a time.
    """

    def __init__(self) -> None:
        self._opened: JobJournal | None = None
        self._signals: dict[str, asyncio.Event] = {}
        self._watchers: dict[str, int] = {}

    @property
    def journal(self) -> JobJournal:
        """The open journal; UNAVAILABLE before the service has started."""
        if self._opened is None:
            raise UnavailableError("the fine-tuning service is not started", retry_after_s=1.0)
        return self._opened

    def open(self, path: Path) -> None:
        """Open the journal."""
        self._opened = JobJournal(path)

    def close(self) -> None:
        """Close the journal (idempotent)."""
        if self._opened is not None:
            self._opened.close()
            self._opened = None

    # --- writes ---
    def record(self, job: Job, *payloads: EventPayload, new: bool = False) -> list[Event]:
        """Save the job with these events (one transaction) and wake its watchers."""
        events = self.journal.save(job, *payloads, new=new)
        signal = self._signals.pop(job.job_id, None)
        if signal is not None:
            signal.set()  # wakes the watchers; the next wait gets a fresh event
        return events

    def transition(self, job: Job, state: JobState, message: str = "", failure: bool = False) -> None:
        """Move the job to a state (failure: the message is its failure_message); terminal states stamp finished_at."""
        previous = job.state
        job.state = state
        if failure:
            job.failure_message = message
        if job.terminal:
            job.finished_at = time.time()
        self.record(job, StateChange(previous, state, message))

    def log(self, job: Job, severity: LogSeverity, message: str) -> None:
        """A line of the job's log."""
        self.record(job, LogLine(severity, message))

    # --- reads ---
    def get(self, job_id: str) -> Job:
        """One job; NOT_FOUND when unknown."""
        job = self.journal.job(job_id) if job_id else None
        if job is None:
            raise NotFoundError(
                f"fine-tuning job '{job_id}' does not exist", reason="JOB_NOT_FOUND", metadata={"job_id": job_id}
            )
        return job

    def list_jobs(self, state: JobState | None, offset: int, limit: int) -> tuple[list[Job], bool]:
        """A page of jobs, newest first, and whether more follow."""
        jobs = self.journal.jobs(state, offset, limit + 1)
        return jobs[:limit], len(jobs) > limit

    async def watch(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        """The job's events after `after`, then new ones as they happen; ends after a terminal state's event."""
        self.get(job_id)
        self._watchers[job_id] = self._watchers.get(job_id, 0) + 1
        try:
            last = after
            while True:
                signal = self._signal(job_id)
                events = self.journal.events(job_id, last, EVENT_PAGE)
                for event in events:
                    yield event
                    last = event.sequence
                    if isinstance(event.payload, StateChange) and event.payload.state in TERMINAL_STATES:
                        return
                if len(events) == EVENT_PAGE:
                    continue  # more are stored: the next page before waiting
                if not events and self.get(job_id).terminal:
                    return
                await signal.wait()
        finally:
            self._leave(job_id)

    def _leave(self, job_id: str) -> None:
        """A watcher has gone: the last one takes the job's signal with it."""
        left = self._watchers.get(job_id, 1) - 1
        if left > 0:
            self._watchers[job_id] = left
            return
        self._watchers.pop(job_id, None)
        self._signals.pop(job_id, None)

    def _signal(self, job_id: str) -> asyncio.Event:
        signal = self._signals.get(job_id)
        if signal is None:
            signal = self._signals[job_id] = asyncio.Event()
        return signal

    @property
    def watched(self) -> int:
        """How many jobs have a watcher now (the size of the per-job tables)."""
        return len(self._watchers)
