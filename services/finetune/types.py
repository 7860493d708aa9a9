"""The fine-tuning service's domain types: tasks, job states, hyper-parameters, jobs, events and files."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "TERMINAL_STATES",
    "ClassificationExample",
    "CompletionExample",
    "Evaluation",
    "Event",
    "EventKind",
    "Hyperparameters",
    "Job",
    "JobState",
    "LogLine",
    "LogSeverity",
    "Metrics",
    "Progress",
    "StateChange",
    "Task",
    "TrainingFile",
]


class Task(enum.StrEnum):
    """What a job trains."""

    CAUSAL_LM = "causal-lm"
    TEXT_CLASSIFICATION = "text-classification"


class JobState(enum.StrEnum):
    """The lifecycle state of a job (INTERRUPTED is not terminal: the job is queued again)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


#: States a job never leaves.
TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class LogSeverity(enum.StrEnum):
    """Severity of a job's log line."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class CompletionExample:
    """A prompt and the response the model should give."""

    prompt: str
    response: str


@dataclass(frozen=True)
class ClassificationExample:
    """A text and its label."""

    text: str
    label: str


@dataclass(frozen=True)
class Hyperparameters:
    """Effective training settings; the fields that do not apply to the task are None."""

    learning_rate: float
    epochs: int
    batch_size: int
    max_length: int
    seed: int
    lora_rank: int | None = None
    lora_alpha: float | None = None
    unfrozen_layers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hyperparameters:
        """Inverse of to_dict (unknown keys ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Progress:
    """How far training has got."""

    step: int
    total_steps: int
    epoch: int
    total_epochs: int
    eta_s: float | None = None
    train_loss: float | None = None

    @property
    def fraction(self) -> float:
        """step / total_steps, in [0, 1]."""
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


@dataclass(frozen=True)
class Metrics:
    """The latest metrics of a job."""

    step: int
    train_loss: float
    validation_loss: float | None = None
    validation_accuracy: float | None = None


@dataclass(frozen=True)
class StateChange:
    """A job changed state."""

    previous_state: JobState | None
    state: JobState
    message: str = ""


@dataclass(frozen=True)
class Evaluation:
    """One evaluation on the validation examples."""

    step: int
    epoch: int
    validation_loss: float
    validation_accuracy: float | None = None


@dataclass(frozen=True)
class LogLine:
    """A line of a job's log."""

    severity: LogSeverity
    message: str


class EventKind(enum.StrEnum):
    """Which payload an event carries."""

    STATE_CHANGE = "state_change"
    PROGRESS = "progress"
    EVALUATION = "evaluation"
    LOG = "log"


EventPayload = StateChange | Progress | Evaluation | LogLine


@dataclass(frozen=True)
class Event:
    """Something that happened to a job: its number within the job (1, 2, 3...), when, and what."""

    sequence: int
    time: float
    payload: EventPayload

    @property
    def kind(self) -> EventKind:
        """The payload's kind."""
        return _KIND[type(self.payload)]


_KIND: dict[type, EventKind] = {
    StateChange: EventKind.STATE_CHANGE,
    Progress: EventKind.PROGRESS,
    Evaluation: EventKind.EVALUATION,
    LogLine: EventKind.LOG,
}


@dataclass
class Job:
    """A fine-tuning job as the service records it (the proto's FineTuneJob plus what the service needs)."""

    job_id: str
    state: JobState
    base_model: str
    task: Task
    result_model_name: str
    hyperparameters: Hyperparameters
    data_sha256: str
    training_example_count: int
    validation_example_count: int
    created_at: float
    base_spec: dict[str, Any] = field(default_factory=dict)
    """The base model's registry entry (models.yaml form) when the job was created."""
    labels: tuple[str, ...] = ()
    """The label set of a classification job, in logit order."""
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress | None = None
    metrics: Metrics | None = None
    failure_message: str = ""
    checkpoint_step: int = 0
    registered_model_name: str = ""
    attempts: int = 0
    """How many times a worker was started for this job."""
    trace_context: dict[str, str] = field(default_factory=dict)
    """The W3C trace context (traceparent, tracestate) of the call that created the job: its publication (the
    registry call) is traced in the same trace."""

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change."""
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the journal."""
        data = asdict(self)
        data["state"] = self.state.value
        data["task"] = self.task.value
        data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Inverse of to_dict."""
        values = dict(data)
        values["state"] = JobState(values["state"])
        values["task"] = Task(values["task"])
        values["hyperparameters"] = Hyperparameters.from_dict(values["hyperparameters"])
        values["labels"] = tuple(values.get("labels") or ())
        values["progress"] = Progress(**values["progress"]) if values.get("progress") else None
        values["metrics"] = Metrics(**values["metrics"]) if values.get("metrics") else None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class TrainingFile:
    """An uploaded, checked training file."""

    file_id: str
    filename: str
    size_bytes: int
    sha256: str
    example_count: int
    task: Task
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the journal."""
        data = asdict(self)
        data["task"] = self.task.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingFile:
        """Inverse of to_dict."""
        return cls(**{**data, "task": Task(data["task"])})
