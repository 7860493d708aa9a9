from aisemble.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackpressurePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKPRESSURE_POLICY_UNSPECIFIED: _ClassVar[BackpressurePolicy]
    BACKPRESSURE_POLICY_BLOCK: _ClassVar[BackpressurePolicy]
    BACKPRESSURE_POLICY_DROP_OLDEST: _ClassVar[BackpressurePolicy]
    BACKPRESSURE_POLICY_DROP_NEWEST: _ClassVar[BackpressurePolicy]
BACKPRESSURE_POLICY_UNSPECIFIED: BackpressurePolicy
BACKPRESSURE_POLICY_BLOCK: BackpressurePolicy
BACKPRESSURE_POLICY_DROP_OLDEST: BackpressurePolicy
BACKPRESSURE_POLICY_DROP_NEWEST: BackpressurePolicy

class Detection(_message.Message):
    __slots__ = ("box", "class_id", "class_name", "score")
    BOX_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    box: _common_pb2.BoundingBox
    class_id: int
    class_name: str
    score: float
    def __init__(self, box: _Optional[_Union[_common_pb2.BoundingBox, _Mapping]] = ..., class_id: _Optional[int] = ..., class_name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("model", "image", "score_threshold", "iou_threshold", "max_detections", "class_names")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    IOU_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    model: str
    image: _common_pb2.Image
    score_threshold: float
    iou_threshold: float
    max_detections: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., score_threshold: _Optional[float] = ..., iou_threshold: _Optional[float] = ..., max_detections: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("detections", "image_width", "image_height", "selection")
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    image_width: int
    image_height: int
    selection: _common_pb2.ModelSelection
    def __init__(self, detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ...) -> None: ...

class StreamDetectRequest(_message.Message):
    __slots__ = ("model", "frame", "score_threshold", "iou_threshold", "max_detections", "class_names", "frame_index", "backpressure_policy", "max_pending_frames")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    IOU_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    BACKPRESSURE_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_FRAMES_FIELD_NUMBER: _ClassVar[int]
    model: str
    frame: _common_pb2.Image
    score_threshold: float
    iou_threshold: float
    max_detections: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    frame_index: int
    backpressure_policy: BackpressurePolicy
    max_pending_frames: int
    def __init__(self, model: _Optional[str] = ..., frame: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., score_threshold: _Optional[float] = ..., iou_threshold: _Optional[float] = ..., max_detections: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., frame_index: _Optional[int] = ..., backpressure_policy: _Optional[_Union[BackpressurePolicy, str]] = ..., max_pending_frames: _Optional[int] = ...) -> None: ...

class StreamDetectResponse(_message.Message):
    __slots__ = ("frame_index", "detections", "dropped", "image_width", "image_height", "selection")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    dropped: bool
    image_width: int
    image_height: int
    selection: _common_pb2.ModelSelection
    def __init__(self, frame_index: _Optional[int] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., dropped: _Optional[bool] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ...) -> None: ...

class RecognizeRequest(_message.Message):
    __slots__ = ("model", "image")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    image: _common_pb2.Image
    def __init__(self, model: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ...) -> None: ...

class TextLine(_message.Message):
    __slots__ = ("text", "score", "polygon")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    POLYGON_FIELD_NUMBER: _ClassVar[int]
    text: str
    score: float
    polygon: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point]
    def __init__(self, text: _Optional[str] = ..., score: _Optional[float] = ..., polygon: _Optional[_Iterable[_Union[_common_pb2.Point, _Mapping]]] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("lines", "full_text", "image_width", "image_height", "selection")
    LINES_FIELD_NUMBER: _ClassVar[int]
    FULL_TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[TextLine]
    full_text: str
    image_width: int
    image_height: int
    selection: _common_pb2.ModelSelection
    def __init__(self, lines: _Optional[_Iterable[_Union[TextLine, _Mapping]]] = ..., full_text: _Optional[str] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ...) -> None: ...

class ClassifyImageRequest(_message.Message):
    __slots__ = ("model", "image", "top_k")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    model: str
    image: _common_pb2.Image
    top_k: int
    def __init__(self, model: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., top_k: _Optional[int] = ...) -> None: ...

class ClassifyImageResponse(_message.Message):
    __slots__ = ("labels", "selection")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[_common_pb2.LabelScore]
    selection: _common_pb2.ModelSelection
    def __init__(self, labels: _Optional[_Iterable[_Union[_common_pb2.LabelScore, _Mapping]]] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("model", "image", "score_threshold", "iou_threshold", "max_detections", "class_names")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    IOU_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    model: str
    image: _common_pb2.Image
    score_threshold: float
    iou_threshold: float
    max_detections: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., score_threshold: _Optional[float] = ..., iou_threshold: _Optional[float] = ..., max_detections: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ...) -> None: ...

class Mask(_message.Message):
    __slots__ = ("width", "height", "png")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    png: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., png: _Optional[bytes] = ...) -> None: ...

class SegmentedObject(_message.Message):
    __slots__ = ("detection", "mask", "polygon")
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    POLYGON_FIELD_NUMBER: _ClassVar[int]
    detection: Detection
    mask: Mask
    polygon: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point]
    def __init__(self, detection: _Optional[_Union[Detection, _Mapping]] = ..., mask: _Optional[_Union[Mask, _Mapping]] = ..., polygon: _Optional[_Iterable[_Union[_common_pb2.Point, _Mapping]]] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("objects", "image_width", "image_height", "selection")
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[SegmentedObject]
    image_width: int
    image_height: int
    selection: _common_pb2.ModelSelection
    def __init__(self, objects: _Optional[_Iterable[_Union[SegmentedObject, _Mapping]]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ...) -> None: ...

class GenerateImageRequest(_message.Message):
    __slots__ = ("model", "prompt", "width", "height", "n", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    width: int
    height: int
    n: int
    seed: int
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., n: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("data", "mime_type", "revised_prompt")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    REVISED_PROMPT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    mime_type: str
    revised_prompt: str
    def __init__(self, data: _Optional[bytes] = ..., mime_type: _Optional[str] = ..., revised_prompt: _Optional[str] = ...) -> None: ...

class GenerateImageResponse(_message.Message):
    __slots__ = ("images", "selection")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[GeneratedImage]
    selection: _common_pb2.ModelSelection
    def __init__(self, images: _Optional[_Iterable[_Union[GeneratedImage, _Mapping]]] = ..., selection: _Optional[_Union[_common_pb2.ModelSelection, _Mapping]] = ...) -> None: ...
