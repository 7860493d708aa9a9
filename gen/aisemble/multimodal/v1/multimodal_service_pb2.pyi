from aisemble.common.v1 import common_pb2 as _common_pb2
from aisemble.nlp.v1 import nlp_service_pb2 as _nlp_service_pb2
from aisemble.vision.v1 import vision_service_pb2 as _vision_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MentionSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MENTION_SOURCE_UNSPECIFIED: _ClassVar[MentionSource]
    MENTION_SOURCE_DETECTION: _ClassVar[MentionSource]
    MENTION_SOURCE_OCR: _ClassVar[MentionSource]
MENTION_SOURCE_UNSPECIFIED: MentionSource
MENTION_SOURCE_DETECTION: MentionSource
MENTION_SOURCE_OCR: MentionSource

class AnalyzeRequest(_message.Message):
    __slots__ = ("image", "text", "detection_model", "ocr_model", "embedding_model", "score_threshold", "include_embedding")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DETECTION_MODEL_FIELD_NUMBER: _ClassVar[int]
    OCR_MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    text: str
    detection_model: str
    ocr_model: str
    embedding_model: str
    score_threshold: float
    include_embedding: bool
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., text: _Optional[str] = ..., detection_model: _Optional[str] = ..., ocr_model: _Optional[str] = ..., embedding_model: _Optional[str] = ..., score_threshold: _Optional[float] = ..., include_embedding: _Optional[bool] = ...) -> None: ...

class TextAnalysis(_message.Message):
    __slots__ = ("language", "embedding")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    language: _nlp_service_pb2.DetectLanguageResponse
    embedding: _nlp_service_pb2.EmbedResponse
    def __init__(self, language: _Optional[_Union[_nlp_service_pb2.DetectLanguageResponse, _Mapping]] = ..., embedding: _Optional[_Union[_nlp_service_pb2.EmbedResponse, _Mapping]] = ...) -> None: ...

class Mention(_message.Message):
    __slots__ = ("term", "source", "matched_text", "score", "item_indices")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MATCHED_TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDICES_FIELD_NUMBER: _ClassVar[int]
    term: str
    source: MentionSource
    matched_text: str
    score: float
    item_indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, term: _Optional[str] = ..., source: _Optional[_Union[MentionSource, str]] = ..., matched_text: _Optional[str] = ..., score: _Optional[float] = ..., item_indices: _Optional[_Iterable[int]] = ...) -> None: ...

class AnalyzeResponse(_message.Message):
    __slots__ = ("detection", "ocr", "text_analysis", "mentions", "part_failures")
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    OCR_FIELD_NUMBER: _ClassVar[int]
    TEXT_ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    MENTIONS_FIELD_NUMBER: _ClassVar[int]
    PART_FAILURES_FIELD_NUMBER: _ClassVar[int]
    detection: _vision_service_pb2.DetectResponse
    ocr: _vision_service_pb2.RecognizeResponse
    text_analysis: TextAnalysis
    mentions: _containers.RepeatedCompositeFieldContainer[Mention]
    part_failures: _containers.RepeatedCompositeFieldContainer[_common_pb2.PartFailure]
    def __init__(self, detection: _Optional[_Union[_vision_service_pb2.DetectResponse, _Mapping]] = ..., ocr: _Optional[_Union[_vision_service_pb2.RecognizeResponse, _Mapping]] = ..., text_analysis: _Optional[_Union[TextAnalysis, _Mapping]] = ..., mentions: _Optional[_Iterable[_Union[Mention, _Mapping]]] = ..., part_failures: _Optional[_Iterable[_Union[_common_pb2.PartFailure, _Mapping]]] = ...) -> None: ...
