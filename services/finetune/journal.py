"""The durable record of jobs, their events and uploaded files: one SQLite database in the service's data folder.

A job's record and the events that explain a change are written in one transaction, so after a crash
the journal never holds a state without the event that led to it. Writes are small (one row or two)
and run on the event loop's thread; WAL mode keeps them well under a millisecond.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.finetune.types import (
    TERMINAL_STATES,
    Evaluation,
    Event,
    EventKind,
    EventPayload,
    Job,
    JobState,
    LogLine,
    LogSeverity,
    Progress,
    StateChange,
    TrainingFile,
)

__all__ = ["JobJournal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_creation ON jobs (created_at DESC, job_id DESC);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
);
CREATE TABLE IF NOT EXISTS files (
    file_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    record TEXT NOT NULL
);
"""
_VERSION = 1


def _encode(payload: EventPayload) -> str:
    return json.dumps(asdict(payload))


def _decode(kind: str, text: str) -> EventPayload:
    data: dict[str, Any] = json.loads(text)
    match EventKind(kind):
        case EventKind.STATE_CHANGE:
            previous = data.get("previous_state")
            return StateChange(
                previous_state=JobState(previous) if previous else None,
                state=JobState(data["state"]),
                message=data.get("message", ""),
            )
        case EventKind.PROGRESS:
            return Progress(**data)
        case EventKind.EVALUATION:
            return Evaluation(**data)
        case EventKind.LOG:
            return LogLine(severity=LogSeverity(data["severity"]), message=data["message"])


class JobJournal:
    """Jobs, events and files in SQLite (one connection, used from the event loop's thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={_VERSION}")

    def close(self) -> None:
        """Close the database (idempotent)."""
        self._db.close()

    # --- jobs ---
    def save(self, job: Job, *payloads: EventPayload, new: bool = False) -> list[Event]:
        """Write the job's record and append events to it, in one transaction; returns the events."""
        now = time.time()
        events: list[Event] = []
        with self._transaction():
            if new:
                self._db.execute(
                    "INSERT INTO jobs (job_id, created_at, state, record) VALUES (?, ?, ?, ?)",
                    (job.job_id, job.created_at, job.state.value, json.dumps(job.to_dict())),
                )
            else:
                self._db.execute(
                    "UPDATE jobs SET state = ?, record = ? WHERE job_id = ?",
                    (job.state.value, json.dumps(job.to_dict()), job.job_id),
                )
            if payloads:
                (last,) = self._db.execute(
                    "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE job_id = ?", (job.job_id,)
                ).fetchone()
                for offset, payload in enumerate(payloads, start=1):
                    event = Event(sequence=last + offset, time=now, payload=payload)
                    self._db.execute(
                        "INSERT INTO events (job_id, sequence, time, kind, payload) VALUES (?, ?, ?, ?, ?)",
                        (job.job_id, event.sequence, event.time, event.kind.value, _encode(payload)),
                    )
                    events.append(event)
        return events

    def job(self, job_id: str) -> Job | None:
        """One job, or None."""
        row = self._db.execute("SELECT record FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return Job.from_dict(json.loads(row[0])) if row else None

    def jobs(self, state: JobState | None = None, offset: int = 0, limit: int = 50) -> list[Job]:
        """Jobs newest first, optionally in one state."""
        where, args = ("WHERE state = ?", [state.value]) if state else ("", [])
        rows = self._db.execute(
            f"SELECT record FROM jobs {where} ORDER BY created_at DESC, job_id DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return [Job.from_dict(json.loads(row[0])) for row in rows]

    def unfinished(self) -> list[Job]:
        """Jobs not in a terminal state, oldest first (the order they run in)."""
        terminal = [s.value for s in TERMINAL_STATES]
        rows = self._db.execute(
            f"SELECT record FROM jobs WHERE state NOT IN ({', '.join('?' * len(terminal))}) "
            "ORDER BY created_at, job_id",
            terminal,
        ).fetchall()
        return [Job.from_dict(json.loads(row[0])) for row in rows]

    def names_in_use(self) -> set[str]:
        """Result model names of the jobs that may still register one."""
        return {job.result_model_name for job in self.unfinished()}

    # --- events ---
    def events(self, job_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """The job's events with a sequence greater than `after`, in order (the first `limit` of them)."""
        rows = self._db.execute(
            "SELECT sequence, time, kind, payload FROM events WHERE job_id = ? AND sequence > ? ORDER BY sequence "
            "LIMIT ?",
            (job_id, after, -1 if limit is None else limit),
        ).fetchall()
        return [Event(sequence=seq, time=when, payload=_decode(kind, text)) for seq, when, kind, text in rows]

    # --- files ---
    def add_file(self, file: TrainingFile) -> None:
        """Record an uploaded file."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO files (file_id, created_at, record) VALUES (?, ?, ?)",
                (file.file_id, file.created_at, json.dumps(file.to_dict())),
            )

    def file(self, file_id: str) -> TrainingFile | None:
        """One uploaded file, or None."""
        row = self._db.execute("SELECT record FROM files WHERE file_id = ?", (file_id,)).fetchone()
        return TrainingFile.from_dict(json.loads(row[0])) if row else None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
