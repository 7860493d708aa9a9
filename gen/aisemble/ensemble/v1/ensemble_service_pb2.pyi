import datetime

from aisemble.common.v1 import common_pb2 as _common_pb2
from aisemble.llm.v1 import llm_service_pb2 as _llm_service_pb2
from aisemble.nlp.v1 import nlp_service_pb2 as _nlp_service_pb2
from aisemble.vision.v1 import vision_service_pb2 as _vision_service_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_HIGHEST_CONFIDENCE: _ClassVar[Strategy]
    STRATEGY_WEIGHTED_VOTE: _ClassVar[Strategy]
    STRATEGY_PROBABILITY_AVERAGE: _ClassVar[Strategy]
    STRATEGY_WEIGHTED_BOX_FUSION: _ClassVar[Strategy]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_HIGHEST_CONFIDENCE: Strategy
STRATEGY_WEIGHTED_VOTE: Strategy
STRATEGY_PROBABILITY_AVERAGE: Strategy
STRATEGY_WEIGHTED_BOX_FUSION: Strategy

class Member(_message.Message):
    __slots__ = ("model", "weight", "timeout")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    model: str
    weight: float
    timeout: _duration_pb2.Duration
    def __init__(self, model: _Optional[str] = ..., weight: _Optional[float] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("members", "strategy", "min_successful", "completion", "classification", "detection")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MIN_SUCCESSFUL_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    strategy: Strategy
    min_successful: int
    completion: _llm_service_pb2.CompleteRequest
    classification: _nlp_service_pb2.ClassifyRequest
    detection: _vision_service_pb2.DetectRequest
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., min_successful: _Optional[int] = ..., completion: _Optional[_Union[_llm_service_pb2.CompleteRequest, _Mapping]] = ..., classification: _Optional[_Union[_nlp_service_pb2.ClassifyRequest, _Mapping]] = ..., detection: _Optional[_Union[_vision_service_pb2.DetectRequest, _Mapping]] = ...) -> None: ...

class MemberResult(_message.Message):
    __slots__ = ("model", "weight", "latency", "confidence", "completion", "classification", "detection", "failure")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    model: str
    weight: float
    latency: _duration_pb2.Duration
    confidence: float
    completion: _llm_service_pb2.CompleteResponse
    classification: _nlp_service_pb2.ClassifyResponse
    detection: _vision_service_pb2.DetectResponse
    failure: _common_pb2.PartFailure
    def __init__(self, model: _Optional[str] = ..., weight: _Optional[float] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., confidence: _Optional[float] = ..., completion: _Optional[_Union[_llm_service_pb2.CompleteResponse, _Mapping]] = ..., classification: _Optional[_Union[_nlp_service_pb2.ClassifyResponse, _Mapping]] = ..., detection: _Optional[_Union[_vision_service_pb2.DetectResponse, _Mapping]] = ..., failure: _Optional[_Union[_common_pb2.PartFailure, _Mapping]] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("completion", "classification", "detection", "strategy", "member_results")
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MEMBER_RESULTS_FIELD_NUMBER: _ClassVar[int]
    completion: _llm_service_pb2.CompleteResponse
    classification: _nlp_service_pb2.ClassifyResponse
    detection: _vision_service_pb2.DetectResponse
    strategy: Strategy
    member_results: _containers.RepeatedCompositeFieldContainer[MemberResult]
    def __init__(self, completion: _Optional[_Union[_llm_service_pb2.CompleteResponse, _Mapping]] = ..., classification: _Optional[_Union[_nlp_service_pb2.ClassifyResponse, _Mapping]] = ..., detection: _Optional[_Union[_vision_service_pb2.DetectResponse, _Mapping]] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., member_results: _Optional[_Iterable[_Union[MemberResult, _Mapping]]] = ...) -> None: ...

class StreamRunRequest(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: RunRequest
    def __init__(self, run: _Optional[_Union[RunRequest, _Mapping]] = ...) -> None: ...

class StreamRunResponse(_message.Message):
    __slots__ = ("member_result", "combined")
    MEMBER_RESULT_FIELD_NUMBER: _ClassVar[int]
    COMBINED_FIELD_NUMBER: _ClassVar[int]
    member_result: MemberResult
    combined: RunResponse
    def __init__(self, member_result: _Optional[_Union[MemberResult, _Mapping]] = ..., combined: _Optional[_Union[RunResponse, _Mapping]] = ...) -> None: ...
