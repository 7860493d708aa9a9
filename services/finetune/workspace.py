"""The service's data folder: the journal's file, one folder per job (examples, checkpoint, output), the uploads."""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from pathlib import Path
from typing import IO, Any

from aisemble.config.state import fsync_directory
from aisemble.errors import FailedPreconditionError
from services.finetune.examples import Example, write_examples
from services.finetune.trainers.base import CHECKPOINT_FILE, OUTPUT_DIR, RESULT_FILE

__all__ = ["TRAIN_FILE", "VALIDATION_FILE", "Workspace"]

#: Where a job's examples live in its folder.
TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "validation.jsonl"


class Workspace:
    """Paths and files under the data folder; `lock` holds it for one service process."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def journal_path(self) -> Path:
        """The SQLite journal."""
        return self.root / "finetune.db"

    def create(self) -> None:
        """Make the folders (idempotent)."""
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        (self.root / "files").mkdir(parents=True, exist_ok=True)

    def lock(self) -> IO[Any]:
        """Hold the data folder for this process (closing the handle releases it): two services on one journal
        would run each job twice. FAILED_PRECONDITION (DATA_DIR_IN_USE) when another process holds it."""
        handle = (self.root / "service.lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FailedPreconditionError(
                f"another fine-tuning service is using the data folder {self.root}",
                reason="DATA_DIR_IN_USE",
                metadata={"data_dir": str(self.root)},
            ) from None
        return handle

    def job_dir(self, job_id: str) -> Path:
        """A job's folder."""
        return self.root / "jobs" / job_id

    def file_path(self, file_id: str) -> Path:
        """An uploaded training file."""
        return self.root / "files" / f"{file_id}.jsonl"

    def write_examples(self, job_id: str, train: list[Example], validation: list[Example]) -> None:
        """Write a new job's training and validation examples into its folder."""
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        write_examples(folder / TRAIN_FILE, train)
        write_examples(folder / VALIDATION_FILE, validation)
        fsync_directory(folder.parent)  # the job's new folder itself

    def clean_job(self, job_id: str) -> None:
        """Delete what training wrote (checkpoint, output); the examples stay, for the record."""
        folder = self.job_dir(job_id)
        for name in (OUTPUT_DIR, OUTPUT_DIR + ".partial"):
            shutil.rmtree(folder / name, ignore_errors=True)
        for name in (CHECKPOINT_FILE, CHECKPOINT_FILE + ".partial", RESULT_FILE, RESULT_FILE + ".partial"):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        for leftover in folder.glob(".*.tmp"):  # temporary files of atomic writes a kill cut short
            leftover.unlink(missing_ok=True)

    def clean_uploads(self) -> None:
        """Delete uploads a crash cut short (temporary files; call only while holding the lock)."""
        for leftover in (self.root / "files").glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def finished_output(self, job_id: str) -> dict[str, Any] | None:
        """The result of a job whose training finished (output complete), None otherwise."""
        folder = self.job_dir(job_id)
        path = folder / RESULT_FILE
        if not path.exists() or not (folder / OUTPUT_DIR).is_dir():
            return None
        try:
            result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return result
