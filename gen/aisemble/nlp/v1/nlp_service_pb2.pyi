from aisemble.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClassifyRequest(_message.Message):
    __slots__ = ("model", "texts", "candidate_labels", "multi_label")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_LABELS_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    candidate_labels: _containers.RepeatedScalarFieldContainer[str]
    multi_label: bool
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., candidate_labels: _Optional[_Iterable[str]] = ..., multi_label: _Optional[bool] = ...) -> None: ...

class ClassificationResult(_message.Message):
    __slots__ = ("labels", "truncated", "token_count")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[_common_pb2.LabelScore]
    truncated: bool
    token_count: int
    def __init__(self, labels: _Optional[_Iterable[_Union[_common_pb2.LabelScore, _Mapping]]] = ..., truncated: _Optional[bool] = ..., token_count: _Optional[int] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results", "selection")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ClassificationResult]
    selection: _common_pb2.ModelSelection
    def __init__(self, results: _Optional[_Iterable[_Union[ClassificationResult, _Mapping]]] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("model", "texts", "normalize")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    normalize: bool
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., normalize: _Optional[bool] = ...) -> None: ...

class EmbeddingResult(_message.Message):
    __slots__ = ("values", "truncated", "token_count")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    truncated: bool
    token_count: int
    def __init__(self, values: _Optional[_Iterable[float]] = ..., truncated: _Optional[bool] = ..., token_count: _Optional[int] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "dimensions", "selection")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[EmbeddingResult]
    dimensions: int
    selection: _common_pb2.ModelSelection
    def __init__(self, embeddings: _Optional[_Iterable[_Union[EmbeddingResult, _Mapping]]] = ..., dimensions: _Optional[int] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ...) -> None: ...

class DetectLanguageRequest(_message.Message):
    __slots__ = ("texts", "model", "top_k")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    top_k: int
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., top_k: _Optional[int] = ...) -> None: ...

class LanguageScore(_message.Message):
    __slots__ = ("language_code", "score")
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    language_code: str
    score: float
    def __init__(self, language_code: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class LanguageDetectionResult(_message.Message):
    __slots__ = ("language_code", "score", "alternatives", "truncated", "token_count")
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    language_code: str
    score: float
    alternatives: _containers.RepeatedCompositeFieldContainer[LanguageScore]
    truncated: bool
    token_count: int
    def __init__(self, language_code: _Optional[str] = ..., score: _Optional[float] = ..., alternatives: _Optional[_Iterable[_Union[LanguageScore, _Mapping]]] = ..., truncated: _Optional[bool] = ..., token_count: _Optional[int] = ...) -> None: ...

class DetectLanguageResponse(_message.Message):
    __slots__ = ("results", "selection")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LanguageDetectionResult]
    selection: _common_pb2.ModelSelection
    def __init__(self, results: _Optional[_Iterable[_Union[LanguageDetectionResult, _Mapping]]] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ...) -> None: ...

class TextItem(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class StreamEmbedRequest(_message.Message):
    __slots__ = ("model", "normalize", "items", "max_inflight_texts")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_TEXTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    normalize: bool
    items: _containers.RepeatedCompositeFieldContainer[TextItem]
    max_inflight_texts: int
    def __init__(self, model: _Optional[str] = ..., normalize: _Optional[bool] = ..., items: _Optional[_Iterable[_Union[TextItem, _Mapping]]] = ..., max_inflight_texts: _Optional[int] = ...) -> None: ...

class StreamEmbedResult(_message.Message):
    __slots__ = ("id", "embedding", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    embedding: EmbeddingResult
    error: _common_pb2.ItemError
    def __init__(self, id: _Optional[str] = ..., embedding: _Optional[_Union[EmbeddingResult, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class StreamEmbedResponse(_message.Message):
    __slots__ = ("results", "dimensions", "selection")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StreamEmbedResult]
    dimensions: int
    selection: _common_pb2.ModelSelection
    def __init__(self, results: _Optional[_Iterable[_Union[StreamEmbedResult, _Mapping]]] = ..., dimensions: _Optional[int] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ...) -> None: ...

class StreamClassifyRequest(_message.Message):
    __slots__ = ("model", "candidate_labels", "multi_label", "items", "max_inflight_texts")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_LABELS_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_TEXTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    candidate_labels: _containers.RepeatedScalarFieldContainer[str]
    multi_label: bool
    items: _containers.RepeatedCompositeFieldContainer[TextItem]
    max_inflight_texts: int
    def __init__(self, model: _Optional[str] = ..., candidate_labels: _Optional[_Iterable[str]] = ..., multi_label: _Optional[bool] = ..., items: _Optional[_Iterable[_Union[TextItem, _Mapping]]] = ..., max_inflight_texts: _Optional[int] = ...) -> None: ...

class StreamClassifyResult(_message.Message):
    __slots__ = ("id", "classification", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    classification: ClassificationResult
    error: _common_pb2.ItemError
    def __init__(self, id: _Optional[str] = ..., classification: _Optional[_Union[ClassificationResult, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class StreamClassifyResponse(_message.Message):
    __slots__ = ("results", "selection")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StreamClassifyResult]
    selection: _common_pb2.ModelSelection
    def __init__(self, results: _Optional[_Iterable[_Union[StreamClassifyResult, _Mapping]]] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ...) -> None: ...
