"""What a training worker sends the service over its pipe: reports as they happen, then how training ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.finetune.types import Evaluation, LogLine, Progress

__all__ = ["CheckpointSaved", "TrainingFailed", "TrainingFinished", "WorkerMessage"]


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint of this step is on disk: a new worker resumes from it."""

    step: int


@dataclass(frozen=True)
class TrainingFinished:
    """Training ended and the output is complete (result: what the job's result.json holds)."""

    result: dict[str, Any]


@dataclass(frozen=True)
class TrainingFailed:
    """Training stopped for a reason the job's owner can act on (the message says which)."""

    message: str


#: Every message, in the order a worker sends them: reports (progress, evaluation, log line, checkpoint),
#: then exactly one of TrainingFinished or TrainingFailed. They cross the process boundary pickled.
WorkerMessage = Progress | Evaluation | LogLine | CheckpointSaved | TrainingFinished | TrainingFailed
