import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FineTuneTask(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINE_TUNE_TASK_UNSPECIFIED: _ClassVar[FineTuneTask]
    FINE_TUNE_TASK_CAUSAL_LM: _ClassVar[FineTuneTask]
    FINE_TUNE_TASK_TEXT_CLASSIFICATION: _ClassVar[FineTuneTask]

class FineTuneJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINE_TUNE_JOB_STATE_UNSPECIFIED: _ClassVar[FineTuneJobState]
    FINE_TUNE_JOB_STATE_QUEUED: _ClassVar[FineTuneJobState]
    FINE_TUNE_JOB_STATE_RUNNING: _ClassVar[FineTuneJobState]
    FINE_TUNE_JOB_STATE_SUCCEEDED: _ClassVar[FineTuneJobState]
    FINE_TUNE_JOB_STATE_FAILED: _ClassVar[FineTuneJobState]
    FINE_TUNE_JOB_STATE_CANCELLED: _ClassVar[FineTuneJobState]
    FINE_TUNE_JOB_STATE_INTERRUPTED: _ClassVar[FineTuneJobState]

class LogSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_SEVERITY_UNSPECIFIED: _ClassVar[LogSeverity]
    LOG_SEVERITY_DEBUG: _ClassVar[LogSeverity]
    LOG_SEVERITY_INFO: _ClassVar[LogSeverity]
    LOG_SEVERITY_WARNING: _ClassVar[LogSeverity]
    LOG_SEVERITY_ERROR: _ClassVar[LogSeverity]
FINE_TUNE_TASK_UNSPECIFIED: FineTuneTask
FINE_TUNE_TASK_CAUSAL_LM: FineTuneTask
FINE_TUNE_TASK_TEXT_CLASSIFICATION: FineTuneTask
FINE_TUNE_JOB_STATE_UNSPECIFIED: FineTuneJobState
FINE_TUNE_JOB_STATE_QUEUED: FineTuneJobState
FINE_TUNE_JOB_STATE_RUNNING: FineTuneJobState
FINE_TUNE_JOB_STATE_SUCCEEDED: FineTuneJobState
FINE_TUNE_JOB_STATE_FAILED: FineTuneJobState
FINE_TUNE_JOB_STATE_CANCELLED: FineTuneJobState
FINE_TUNE_JOB_STATE_INTERRUPTED: FineTuneJobState
LOG_SEVERITY_UNSPECIFIED: LogSeverity
LOG_SEVERITY_DEBUG: LogSeverity
LOG_SEVERITY_INFO: LogSeverity
LOG_SEVERITY_WARNING: LogSeverity
LOG_SEVERITY_ERROR: LogSeverity

class CompletionExample(_message.Message):
    __slots__ = ("prompt", "response")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    response: str
    def __init__(self, prompt: _Optional[str] = ..., response: _Optional[str] = ...) -> None: ...

class ClassificationExample(_message.Message):
    __slots__ = ("text", "label")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    label: str
    def __init__(self, text: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class InlineExamples(_message.Message):
    __slots__ = ("completion_examples", "classification_examples")
    COMPLETION_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    completion_examples: _containers.RepeatedCompositeFieldContainer[CompletionExample]
    classification_examples: _containers.RepeatedCompositeFieldContainer[ClassificationExample]
    def __init__(self, completion_examples: _Optional[_Iterable[_Union[CompletionExample, _Mapping]]] = ..., classification_examples: _Optional[_Iterable[_Union[ClassificationExample, _Mapping]]] = ...) -> None: ...

class Hyperparameters(_message.Message):
    __slots__ = ("learning_rate", "epochs", "batch_size", "max_length", "lora_rank", "lora_alpha", "unfrozen_layers", "seed")
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    LORA_ALPHA_FIELD_NUMBER: _ClassVar[int]
    UNFROZEN_LAYERS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    learning_rate: float
    epochs: int
    batch_size: int
    max_length: int
    lora_rank: int
    lora_alpha: float
    unfrozen_layers: int
    seed: int
    def __init__(self, learning_rate: _Optional[float] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., max_length: _Optional[int] = ..., lora_rank: _Optional[int] = ..., lora_alpha: _Optional[float] = ..., unfrozen_layers: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class CreateFineTuneJobRequest(_message.Message):
    __slots__ = ("base_model", "task", "examples", "training_file_id", "validation_split", "hyperparameters", "result_model_name")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FILE_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SPLIT_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RESULT_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    task: FineTuneTask
    examples: InlineExamples
    training_file_id: str
    validation_split: float
    hyperparameters: Hyperparameters
    result_model_name: str
    def __init__(self, base_model: _Optional[str] = ..., task: _Optional[_Union[FineTuneTask, str]] = ..., examples: _Optional[_Union[InlineExamples, _Mapping]] = ..., training_file_id: _Optional[str] = ..., validation_split: _Optional[float] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., result_model_name: _Optional[str] = ...) -> None: ...

class CreateFineTuneJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: FineTuneJob
    def __init__(self, job: _Optional[_Union[FineTuneJob, _Mapping]] = ...) -> None: ...

class TrainingFileHeader(_message.Message):
    __slots__ = ("filename", "task", "size_bytes", "sha256")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    filename: str
    task: FineTuneTask
    size_bytes: int
    sha256: str
    def __init__(self, filename: _Optional[str] = ..., task: _Optional[_Union[FineTuneTask, str]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadTrainingFileRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: TrainingFileHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[TrainingFileHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class TrainingFile(_message.Message):
    __slots__ = ("file_id", "filename", "size_bytes", "sha256", "example_count", "task", "created_at")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    filename: str
    size_bytes: int
    sha256: str
    example_count: int
    task: FineTuneTask
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, file_id: _Optional[str] = ..., filename: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., example_count: _Optional[int] = ..., task: _Optional[_Union[FineTuneTask, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UploadTrainingFileResponse(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: TrainingFile
    def __init__(self, file: _Optional[_Union[TrainingFile, _Mapping]] = ...) -> None: ...

class TrainingProgress(_message.Message):
    __slots__ = ("step", "total_steps", "epoch", "total_epochs", "fraction", "eta", "train_loss")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    epoch: int
    total_epochs: int
    fraction: float
    eta: _duration_pb2.Duration
    train_loss: float
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., epoch: _Optional[int] = ..., total_epochs: _Optional[int] = ..., fraction: _Optional[float] = ..., eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., train_loss: _Optional[float] = ...) -> None: ...

class TrainingMetrics(_message.Message):
    __slots__ = ("step", "train_loss", "validation_loss", "validation_accuracy")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    step: int
    train_loss: float
    validation_loss: float
    validation_accuracy: float
    def __init__(self, step: _Optional[int] = ..., train_loss: _Optional[float] = ..., validation_loss: _Optional[float] = ..., validation_accuracy: _Optional[float] = ...) -> None: ...

class FineTuneJob(_message.Message):
    __slots__ = ("job_id", "state", "base_model", "task", "result_model_name", "hyperparameters", "data_sha256", "training_example_count", "validation_example_count", "created_at", "started_at", "finished_at", "progress", "metrics", "failure_message", "checkpoint_step", "registered_model_name")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    RESULT_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DATA_SHA256_FIELD_NUMBER: _ClassVar[int]
    TRAINING_EXAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_EXAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: FineTuneJobState
    base_model: str
    task: FineTuneTask
    result_model_name: str
    hyperparameters: Hyperparameters
    data_sha256: str
    training_example_count: int
    validation_example_count: int
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    progress: TrainingProgress
    metrics: TrainingMetrics
    failure_message: str
    checkpoint_step: int
    registered_model_name: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[FineTuneJobState, str]] = ..., base_model: _Optional[str] = ..., task: _Optional[_Union[FineTuneTask, str]] = ..., result_model_name: _Optional[str] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., data_sha256: _Optional[str] = ..., training_example_count: _Optional[int] = ..., validation_example_count: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress: _Optional[_Union[TrainingProgress, _Mapping]] = ..., metrics: _Optional[_Union[TrainingMetrics, _Mapping]] = ..., failure_message: _Optional[str] = ..., checkpoint_step: _Optional[int] = ..., registered_model_name: _Optional[str] = ...) -> None: ...

class GetFineTuneJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetFineTuneJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: FineTuneJob
    def __init__(self, job: _Optional[_Union[FineTuneJob, _Mapping]] = ...) -> None: ...

class ListFineTuneJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: FineTuneJobState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[FineTuneJobState, str]] = ...) -> None: ...

class ListFineTuneJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[FineTuneJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[FineTuneJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelFineTuneJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelFineTuneJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: FineTuneJob
    def __init__(self, job: _Optional[_Union[FineTuneJob, _Mapping]] = ...) -> None: ...

class WatchFineTuneJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("previous_state", "state", "message")
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    previous_state: FineTuneJobState
    state: FineTuneJobState
    message: str
    def __init__(self, previous_state: _Optional[_Union[FineTuneJobState, str]] = ..., state: _Optional[_Union[FineTuneJobState, str]] = ..., message: _Optional[str] = ...) -> None: ...

class EvaluationResult(_message.Message):
    __slots__ = ("step", "epoch", "validation_loss", "validation_accuracy")
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    step: int
    epoch: int
    validation_loss: float
    validation_accuracy: float
    def __init__(self, step: _Optional[int] = ..., epoch: _Optional[int] = ..., validation_loss: _Optional[float] = ..., validation_accuracy: _Optional[float] = ...) -> None: ...

class LogMessage(_message.Message):
    __slots__ = ("severity", "message")
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    severity: LogSeverity
    message: str
    def __init__(self, severity: _Optional[_Union[LogSeverity, str]] = ..., message: _Optional[str] = ...) -> None: ...

class FineTuneEvent(_message.Message):
    __slots__ = ("sequence", "time", "state_change", "progress", "evaluation", "log")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    state_change: StateChange
    progress: TrainingProgress
    evaluation: EvaluationResult
    log: LogMessage
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_change: _Optional[_Union[StateChange, _Mapping]] = ..., progress: _Optional[_Union[TrainingProgress, _Mapping]] = ..., evaluation: _Optional[_Union[EvaluationResult, _Mapping]] = ..., log: _Optional[_Union[LogMessage, _Mapping]] = ...) -> None: ...

class WatchFineTuneJobResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: FineTuneEvent
    def __init__(self, event: _Optional[_Union[FineTuneEvent, _Mapping]] = ...) -> None: ...
