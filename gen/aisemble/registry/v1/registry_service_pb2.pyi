import datetime

from aisemble.common.v1 import common_pb2 as _common_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_HEALTH_UNSPECIFIED: _ClassVar[ModelHealth]
    MODEL_HEALTH_SERVING: _ClassVar[ModelHealth]
    MODEL_HEALTH_NOT_SERVING: _ClassVar[ModelHealth]
    MODEL_HEALTH_UNKNOWN: _ClassVar[ModelHealth]

class ChangeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_TYPE_UNSPECIFIED: _ClassVar[ChangeType]
    CHANGE_TYPE_ADDED: _ClassVar[ChangeType]
    CHANGE_TYPE_UPDATED: _ClassVar[ChangeType]
    CHANGE_TYPE_REMOVED: _ClassVar[ChangeType]
MODEL_HEALTH_UNSPECIFIED: ModelHealth
MODEL_HEALTH_SERVING: ModelHealth
MODEL_HEALTH_NOT_SERVING: ModelHealth
MODEL_HEALTH_UNKNOWN: ModelHealth
CHANGE_TYPE_UNSPECIFIED: ChangeType
CHANGE_TYPE_ADDED: ChangeType
CHANGE_TYPE_UPDATED: ChangeType
CHANGE_TYPE_REMOVED: ChangeType

class Lineage(_message.Message):
    __slots__ = ("base_model", "job_id", "data_sha256", "metrics", "created_at")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_SHA256_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    job_id: str
    data_sha256: str
    metrics: _containers.ScalarMap[str, float]
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, base_model: _Optional[str] = ..., job_id: _Optional[str] = ..., data_sha256: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ModelStats(_message.Message):
    __slots__ = ("request_count", "error_count", "latency_p50", "latency_p95", "tokens_per_second", "output_tokens", "cost_total", "last_updated")
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_FIELD_NUMBER: _ClassVar[int]
    request_count: int
    error_count: int
    latency_p50: _duration_pb2.Duration
    latency_p95: _duration_pb2.Duration
    tokens_per_second: float
    output_tokens: int
    cost_total: float
    last_updated: _timestamp_pb2.Timestamp
    def __init__(self, request_count: _Optional[int] = ..., error_count: _Optional[int] = ..., latency_p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., latency_p95: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., tokens_per_second: _Optional[float] = ..., output_tokens: _Optional[int] = ..., cost_total: _Optional[float] = ..., last_updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "task", "provider", "model_id", "model_path", "endpoint", "service", "max_tokens", "max_output_tokens", "cost_per_token", "cost_per_input_token", "device", "quantization", "domains", "languages", "tags", "version", "description", "params", "lineage", "health", "stats")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COST_PER_INPUT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: _common_pb2.Task
    provider: str
    model_id: str
    model_path: str
    endpoint: str
    service: str
    max_tokens: int
    max_output_tokens: int
    cost_per_token: float
    cost_per_input_token: float
    device: str
    quantization: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    languages: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    version: str
    description: str
    params: _struct_pb2.Struct
    lineage: Lineage
    health: ModelHealth
    stats: ModelStats
    def __init__(self, name: _Optional[str] = ..., task: _Optional[_Union[_common_pb2.Task, str]] = ..., provider: _Optional[str] = ..., model_id: _Optional[str] = ..., model_path: _Optional[str] = ..., endpoint: _Optional[str] = ..., service: _Optional[str] = ..., max_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., cost_per_token: _Optional[float] = ..., cost_per_input_token: _Optional[float] = ..., device: _Optional[str] = ..., quantization: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., languages: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., health: _Optional[_Union[ModelHealth, str]] = ..., stats: _Optional[_Union[ModelStats, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("task", "domain", "provider", "language", "page_size", "page_token")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.Task
    domain: str
    provider: str
    language: str
    page_size: int
    page_token: str
    def __init__(self, task: _Optional[_Union[_common_pb2.Task, str]] = ..., domain: _Optional[str] = ..., provider: _Optional[str] = ..., language: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class RegisterModelRequest(_message.Message):
    __slots__ = ("model", "validate_only", "replace_existing")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    REPLACE_EXISTING_FIELD_NUMBER: _ClassVar[int]
    model: Model
    validate_only: bool
    replace_existing: bool
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., validate_only: _Optional[bool] = ..., replace_existing: _Optional[bool] = ...) -> None: ...

class RegisterModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class DeregisterModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeregisterModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class WatchModelsRequest(_message.Message):
    __slots__ = ("send_current_models",)
    SEND_CURRENT_MODELS_FIELD_NUMBER: _ClassVar[int]
    send_current_models: bool
    def __init__(self, send_current_models: _Optional[bool] = ...) -> None: ...

class WatchModelsResponse(_message.Message):
    __slots__ = ("change_type", "model")
    CHANGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    change_type: ChangeType
    model: Model
    def __init__(self, change_type: _Optional[_Union[ChangeType, str]] = ..., model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class ResolveModelRequest(_message.Message):
    __slots__ = ("task", "model", "text", "max_output_tokens", "language_hint")
    TASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_HINT_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.Task
    model: str
    text: str
    max_output_tokens: int
    language_hint: str
    def __init__(self, task: _Optional[_Union[_common_pb2.Task, str]] = ..., model: _Optional[str] = ..., text: _Optional[str] = ..., max_output_tokens: _Optional[int] = ..., language_hint: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("model", "eligible", "score", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    eligible: bool
    score: float
    reason: str
    def __init__(self, model: _Optional[str] = ..., eligible: _Optional[bool] = ..., score: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class ResolveModelResponse(_message.Message):
    __slots__ = ("selection", "candidates", "detected_domain", "detected_language")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    DETECTED_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DETECTED_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    selection: _common_pb2.ModelSelection
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    detected_domain: str
    detected_language: str
    def __init__(self, selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., detected_domain: _Optional[str] = ..., detected_language: _Optional[str] = ...) -> None: ...

class ListRoutingDecisionsRequest(_message.Message):
    __slots__ = ("max_decisions", "task")
    MAX_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    max_decisions: int
    task: _common_pb2.Task
    def __init__(self, max_decisions: _Optional[int] = ..., task: _Optional[_Union[_common_pb2.Task, str]] = ...) -> None: ...

class RoutingDecision(_message.Message):
    __slots__ = ("time", "method", "task", "selection", "detected_domain", "domain_source", "detected_language", "candidates")
    TIME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    DETECTED_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_SOURCE_FIELD_NUMBER: _ClassVar[int]
    DETECTED_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    method: str
    task: _common_pb2.Task
    selection: _common_pb2.ModelSelection
    detected_domain: str
    domain_source: str
    detected_language: str
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., method: _Optional[str] = ..., task: _Optional[_Union[_common_pb2.Task, str]] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ..., detected_domain: _Optional[str] = ..., domain_source: _Optional[str] = ..., detected_language: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ...) -> None: ...

class ListRoutingDecisionsResponse(_message.Message):
    __slots__ = ("decisions", "capacity")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[RoutingDecision]
    capacity: int
    def __init__(self, decisions: _Optional[_Iterable[_Union[RoutingDecision, _Mapping]]] = ..., capacity: _Optional[int] = ...) -> None: ...
