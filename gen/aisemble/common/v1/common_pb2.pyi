from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_TEXT_GENERATION: _ClassVar[Task]
    TASK_EMBEDDING: _ClassVar[Task]
    TASK_TEXT_CLASSIFICATION: _ClassVar[Task]
    TASK_LANGUAGE_DETECTION: _ClassVar[Task]
    TASK_OBJECT_DETECTION: _ClassVar[Task]
    TASK_OCR: _ClassVar[Task]
    TASK_IMAGE_CLASSIFICATION: _ClassVar[Task]
    TASK_IMAGE_SEGMENTATION: _ClassVar[Task]
    TASK_IMAGE_GENERATION: _ClassVar[Task]
TASK_UNSPECIFIED: Task
TASK_TEXT_GENERATION: Task
TASK_EMBEDDING: Task
TASK_TEXT_CLASSIFICATION: Task
TASK_LANGUAGE_DETECTION: Task
TASK_OBJECT_DETECTION: Task
TASK_OCR: Task
TASK_IMAGE_CLASSIFICATION: Task
TASK_IMAGE_SEGMENTATION: Task
TASK_IMAGE_GENERATION: Task

class Image(_message.Message):
    __slots__ = ("data", "uri")
    DATA_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    uri: str
    def __init__(self, data: _Optional[bytes] = ..., uri: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "output_tokens", "total_tokens", "cost")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    output_tokens: int
    total_tokens: int
    cost: float
    def __init__(self, prompt_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., cost: _Optional[float] = ...) -> None: ...

class ModelSelection(_message.Message):
    __slots__ = ("model", "model_version", "automatic", "reason", "rule")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTOMATIC_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    automatic: bool
    reason: str
    rule: str
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., automatic: _Optional[bool] = ..., reason: _Optional[str] = ..., rule: _Optional[str] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class BoundingBox(_message.Message):
    __slots__ = ("x_min", "y_min", "x_max", "y_max")
    X_MIN_FIELD_NUMBER: _ClassVar[int]
    Y_MIN_FIELD_NUMBER: _ClassVar[int]
    X_MAX_FIELD_NUMBER: _ClassVar[int]
    Y_MAX_FIELD_NUMBER: _ClassVar[int]
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    def __init__(self, x_min: _Optional[float] = ..., y_min: _Optional[float] = ..., x_max: _Optional[float] = ..., y_max: _Optional[float] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class PartFailure(_message.Message):
    __slots__ = ("part", "code", "reason", "message")
    PART_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    part: str
    code: int
    reason: str
    message: str
    def __init__(self, part: _Optional[str] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
