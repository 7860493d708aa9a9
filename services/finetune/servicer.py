"""The gRPC face of the fine-tuning service: validates and converts protobuf, the job runner does the work.

Errors (all with google.rpc details, mapped by the shared interceptor):
- INVALID_ARGUMENT: a missing base_model, task or training data; examples of the other task; an
  example with an empty field (named `examples.classification_examples[3]`, or `line 7` of a file);
  one label only; validation_split outside [0, 0.5); a hyper-parameter out of range or of the other
  task; a bad result_model_name; a malformed page_token; an upload whose first message is not the
  header, over the size limit (FILE_TOO_LARGE: sending it again cannot succeed), not matching its
  declared size or SHA-256, or with a bad line.
- NOT_FOUND: an unknown base model (MODEL_NOT_FOUND), job (JOB_NOT_FOUND) or training file.
- FAILED_PRECONDITION: a base model of the wrong task (MODEL_WRONG_TASK) or without trainable weights
  (MODEL_NOT_TRAINABLE); cancelling a SUCCEEDED or FAILED job (JOB_FINISHED) or one that is
  registering its result.
- ALREADY_EXISTS: result_model_name is registered, reserved by an unfinished job, or in the store.
- RESOURCE_EXHAUSTED: the job queue is full (with RetryInfo).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from aisemble.errors import FieldViolation, InvalidArgumentError
from aisemble.finetune.v1 import finetune_service_pb2 as pb
from aisemble.finetune.v1 import finetune_service_pb2_grpc
from services.finetune.runner import JobRequest, JobRunner, UploadHeader
from services.finetune.types import (
    Evaluation,
    Event,
    Job,
    JobState,
    LogLine,
    LogSeverity,
    Progress,
    StateChange,
    Task,
    TrainingFile,
)

__all__ = ["FineTuneServicer", "event_to_proto", "file_to_proto", "job_to_proto", "progress_to_proto"]

_TASKS = {pb.FINE_TUNE_TASK_CAUSAL_LM: Task.CAUSAL_LM, pb.FINE_TUNE_TASK_TEXT_CLASSIFICATION: Task.TEXT_CLASSIFICATION}
_TASK_TO_PROTO = {task: value for value, task in _TASKS.items()}
_STATES = {
    JobState.QUEUED: pb.FINE_TUNE_JOB_STATE_QUEUED,
    JobState.RUNNING: pb.FINE_TUNE_JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.FINE_TUNE_JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.FINE_TUNE_JOB_STATE_FAILED,
    JobState.CANCELLED: pb.FINE_TUNE_JOB_STATE_CANCELLED,
    JobState.INTERRUPTED: pb.FINE_TUNE_JOB_STATE_INTERRUPTED,
}
_STATES_FROM_PROTO = {value: state for state, value in _STATES.items()}
_SEVERITIES = {
    LogSeverity.DEBUG: pb.LOG_SEVERITY_DEBUG,
    LogSeverity.INFO: pb.LOG_SEVERITY_INFO,
    LogSeverity.WARNING: pb.LOG_SEVERITY_WARNING,
    LogSeverity.ERROR: pb.LOG_SEVERITY_ERROR,
}
_HYPERPARAMETERS = (
    "learning_rate",
    "epochs",
    "batch_size",
    "max_length",
    "lora_rank",
    "lora_alpha",
    "unfrozen_layers",
    "seed",
)
_DEFAULT_PAGE = 50
_MAX_PAGE = 1000
#: A page token is the offset this server issued: ASCII digits, at most 18 (fits SQLite's 64-bit integers).
_PAGE_TOKEN = re.compile(r"[0-9]{1,18}")


def _timestamp(message: Any, seconds: float | None) -> None:
    if seconds is not None:
        message.FromNanoseconds(int(seconds * 1e9))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def progress_to_proto(progress: Progress) -> pb.TrainingProgress:
    """A TrainingProgress message."""
    message = pb.TrainingProgress(
        step=progress.step,
        total_steps=progress.total_steps,
        epoch=progress.epoch,
        total_epochs=progress.total_epochs,
        fraction=progress.fraction,
    )
    if progress.eta_s is not None and math.isfinite(progress.eta_s):
        message.eta.FromNanoseconds(int(max(0.0, progress.eta_s) * 1e9))
    if (loss := _finite(progress.train_loss)) is not None:
        message.train_loss = loss
    return message


def job_to_proto(job: Job) -> pb.FineTuneJob:
    """A FineTuneJob message (effective hyper-parameters, those of the other task unset)."""
    settings = pb.Hyperparameters(
        **{name: value for name in _HYPERPARAMETERS if (value := getattr(job.hyperparameters, name)) is not None}
    )
    message = pb.FineTuneJob(
        job_id=job.job_id,
        state=_STATES[job.state],
        base_model=job.base_model,
        task=_TASK_TO_PROTO[job.task],
        result_model_name=job.result_model_name,
        hyperparameters=settings,
        data_sha256=job.data_sha256,
        training_example_count=job.training_example_count,
        validation_example_count=job.validation_example_count,
        failure_message=job.failure_message,
        checkpoint_step=job.checkpoint_step,
        registered_model_name=job.registered_model_name,
    )
    _timestamp(message.created_at, job.created_at)
    if job.started_at is not None:
        _timestamp(message.started_at, job.started_at)
    if job.finished_at is not None:
        _timestamp(message.finished_at, job.finished_at)
    if job.progress is not None:
        message.progress.CopyFrom(progress_to_proto(job.progress))
    if job.metrics is not None:
        metrics = pb.TrainingMetrics(step=job.metrics.step, train_loss=_finite(job.metrics.train_loss) or 0.0)
        if (loss := _finite(job.metrics.validation_loss)) is not None:
            metrics.validation_loss = loss
        if (accuracy := _finite(job.metrics.validation_accuracy)) is not None:
            metrics.validation_accuracy = accuracy
        message.metrics.CopyFrom(metrics)
    return message


def event_to_proto(event: Event) -> pb.FineTuneEvent:
    """A FineTuneEvent message."""
    message = pb.FineTuneEvent(sequence=event.sequence)
    _timestamp(message.time, event.time)
    payload = event.payload
    if isinstance(payload, StateChange):
        previous = _STATES[payload.previous_state] if payload.previous_state else pb.FINE_TUNE_JOB_STATE_UNSPECIFIED
        message.state_change.CopyFrom(
            pb.StateChange(previous_state=previous, state=_STATES[payload.state], message=payload.message)
        )
    elif isinstance(payload, Progress):
        message.progress.CopyFrom(progress_to_proto(payload))
    elif isinstance(payload, Evaluation):
        evaluation = pb.EvaluationResult(
            step=payload.step, epoch=payload.epoch, validation_loss=payload.validation_loss
        )
        if payload.validation_accuracy is not None:
            evaluation.validation_accuracy = payload.validation_accuracy
        message.evaluation.CopyFrom(evaluation)
    elif isinstance(payload, LogLine):
        message.log.CopyFrom(pb.LogMessage(severity=_SEVERITIES[payload.severity], message=payload.message))
    return message


def file_to_proto(file: TrainingFile) -> pb.TrainingFile:
    """A TrainingFile message."""
    message = pb.TrainingFile(
        file_id=file.file_id,
        filename=file.filename,
        size_bytes=file.size_bytes,
        sha256=file.sha256,
        example_count=file.example_count,
        task=_TASK_TO_PROTO[file.task],
    )
    _timestamp(message.created_at, file.created_at)
    return message


def _job_id(job_id: str) -> str:
    if not job_id:
        raise InvalidArgumentError.for_field("job_id", "is required")
    return job_id


class FineTuneServicer(finetune_service_pb2_grpc.FineTuneServiceServicer):
    """The six FineTuneService RPCs over one JobRunner."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner

    async def CreateFineTuneJob(
        self, request: pb.CreateFineTuneJobRequest, context: aio.ServicerContext
    ) -> pb.CreateFineTuneJobResponse:
        task = _TASKS.get(request.task)
        inline: list[dict[str, Any]] | None = None
        inline_field = "examples"
        if request.WhichOneof("training_data") == "examples":
            inline, inline_field = self._inline(request.examples, task)
        settings = request.hyperparameters
        job = await self.runner.create(
            JobRequest(
                base_model=request.base_model,
                task=task,
                inline_examples=inline,
                inline_field=inline_field,
                training_file_id=request.training_file_id or None,
                validation_split=request.validation_split if request.HasField("validation_split") else None,
                hyperparameters={name: getattr(settings, name) for name in _HYPERPARAMETERS if settings.HasField(name)},
                result_model_name=request.result_model_name,
            )
        )
        return pb.CreateFineTuneJobResponse(job=job_to_proto(job))

    @staticmethod
    def _inline(examples: pb.InlineExamples, task: Task | None) -> tuple[list[dict[str, Any]], str]:
        """The inline examples of the task as dicts (an empty field as missing) and their request field."""
        if task is None:
            return [], "examples"
        wanted, other = (
            ("completion_examples", "classification_examples")
            if task == Task.CAUSAL_LM
            else ("classification_examples", "completion_examples")
        )
        if len(getattr(examples, other)):
            raise InvalidArgumentError(
                f"examples.{other}: a {task.name} job takes examples.{wanted}",
                field_violations=[FieldViolation(f"examples.{other}", f"a {task.name} job takes examples.{wanted}")],
                reason="EXAMPLES_WRONG_TASK",
            )
        names = ("prompt", "response") if task == Task.CAUSAL_LM else ("text", "label")
        records = [{name: getattr(e, name) or None for name in names} for e in getattr(examples, wanted)]
        return records, f"examples.{wanted}"

    async def UploadTrainingFile(
        self, request_iterator: AsyncIterator[pb.UploadTrainingFileRequest], context: aio.ServicerContext
    ) -> pb.UploadTrainingFileResponse:
        messages = request_iterator.__aiter__()
        first = await anext(messages, None)
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidArgumentError.for_field("header", "the first message must be the header", reason="NO_HEADER")
        header = first.header

        async def chunks() -> AsyncIterator[bytes]:
            async for message in messages:
                if message.WhichOneof("payload") != "chunk":
                    raise InvalidArgumentError.for_field("header", "only the first message may be a header")
                yield message.chunk
            if context.cancelled():  # a cancelled stream ends like a finished one: store nothing
                raise asyncio.CancelledError

        file = await self.runner.upload(
            UploadHeader(
                filename=header.filename,
                task=_TASKS.get(header.task),
                size_bytes=header.size_bytes,
                sha256=header.sha256,
            ),
            chunks(),
        )
        return pb.UploadTrainingFileResponse(file=file_to_proto(file))

    async def GetFineTuneJob(
        self, request: pb.GetFineTuneJobRequest, context: aio.ServicerContext
    ) -> pb.GetFineTuneJobResponse:
        return pb.GetFineTuneJobResponse(job=job_to_proto(self.runner.get(_job_id(request.job_id))))

    async def ListFineTuneJobs(
        self, request: pb.ListFineTuneJobsRequest, context: aio.ServicerContext
    ) -> pb.ListFineTuneJobsResponse:
        if request.page_size < 0:
            raise InvalidArgumentError.for_field("page_size", "must be >= 0")
        size = min(request.page_size or _DEFAULT_PAGE, _MAX_PAGE)
        token = request.page_token
        if token and not _PAGE_TOKEN.fullmatch(token):
            # Never int() on what a client sent: past 4300 digits it raises, and str.isdigit() admits "²".
            raise InvalidArgumentError.for_field(
                "page_token", "is not a token this server issued (the next_page_token of an earlier page)"
            )
        offset = int(token or "0")
        state = _STATES_FROM_PROTO.get(request.state)
        jobs, more = self.runner.list_jobs(state, offset, size)
        return pb.ListFineTuneJobsResponse(
            jobs=[job_to_proto(job) for job in jobs], next_page_token=str(offset + size) if more else ""
        )

    async def CancelFineTuneJob(
        self, request: pb.CancelFineTuneJobRequest, context: aio.ServicerContext
    ) -> pb.CancelFineTuneJobResponse:
        job = await self.runner.cancel(_job_id(request.job_id))
        return pb.CancelFineTuneJobResponse(job=job_to_proto(job))

    async def WatchFineTuneJob(
        self, request: pb.WatchFineTuneJobRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.WatchFineTuneJobResponse]:
        async for event in self.runner.watch(_job_id(request.job_id), request.after_sequence):
            yield pb.WatchFineTuneJobResponse(event=event_to_proto(event))
