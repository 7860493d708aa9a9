"""Domain types of the vision tasks: what backends take and give, and the request of each call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from aisemble.inputs.images import DecodedImage, ImageInput
from services.vision.frames import BackpressurePolicy, Frame

__all__ = [
    "Box",
    "ClassificationRequest",
    "ClassificationResult",
    "ClassifyImageCall",
    "DetectCall",
    "Detection",
    "DetectionOverrides",
    "DetectionParams",
    "DetectionRequest",
    "DetectionResult",
    "GenerateImageCall",
    "GeneratedImage",
    "ImageGenerationRequest",
    "ImageGenerationResult",
    "OcrRequest",
    "OcrResult",
    "Point",
    "RecognizeCall",
    "SegmentCall",
    "SegmentationRequest",
    "SegmentationResult",
    "SegmentedObject",
    "StreamDetectCall",
    "TextLine",
]

#: (x, y) in pixels of the original image.
Point = tuple[float, float]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels of the original image."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float


@dataclass(frozen=True)
class Detection:
    """One detected object."""

    box: Box
    class_id: int
    class_name: str
    score: float


@dataclass(frozen=True)
class DetectionParams:
    """Thresholds and filters of a detection, with the model's defaults already filled in."""

    score_threshold: float = 0.25
    iou_threshold: float = 0.7
    max_detections: int = 300
    class_ids: tuple[int, ...] = ()  # empty: every class


@dataclass(frozen=True)
class DetectionRequest:
    """Detect objects in one image."""

    image: DecodedImage
    params: DetectionParams


@dataclass(frozen=True)
class DetectionResult:
    """The detections, best score first, and the image size."""

    detections: list[Detection]
    width: int
    height: int


@dataclass(frozen=True)
class TextLine:
    """One recognised line: text, confidence and its outline (clockwise from the top-left corner)."""

    text: str
    score: float
    polygon: tuple[Point, ...]


@dataclass(frozen=True)
class OcrRequest:
    """Recognise the text in one image."""

    image: DecodedImage


@dataclass(frozen=True)
class OcrResult:
    """The lines in reading order, and the image size."""

    lines: list[TextLine]
    width: int
    height: int


@dataclass(frozen=True)
class ClassificationRequest:
    """Classify one whole image."""

    image: DecodedImage
    top_k: int = 5


@dataclass(frozen=True)
class ClassificationResult:
    """(label, score) pairs, best first."""

    labels: list[tuple[str, float]]


@dataclass(frozen=True)
class SegmentationRequest:
    """Segment the object instances in one image."""

    image: DecodedImage
    params: DetectionParams


@dataclass(frozen=True)
class SegmentedObject:
    """One instance: its detection, a boolean mask over the whole image and the mask's outline."""

    detection: Detection
    mask: np.ndarray = field(repr=False)  # (height, width) bool
    polygon: tuple[Point, ...] = ()


@dataclass(frozen=True)
class SegmentationResult:
    """The instances, best score first, and the image size."""

    objects: list[SegmentedObject]
    width: int
    height: int


@dataclass(frozen=True)
class ImageGenerationRequest:
    """Draw images from a prompt; 0 for width/height means the model's default size."""

    prompt: str
    width: int = 0
    height: int = 0
    n: int = 1
    seed: int | None = None


@dataclass(frozen=True)
class GeneratedImage:
    """One generated image file."""

    data: bytes
    mime_type: str
    revised_prompt: str = ""


@dataclass(frozen=True)
class ImageGenerationResult:
    """The generated images."""

    images: list[GeneratedImage]


# --- one call of the service: the runner's input, validated (its answer: answers.py) ---


@dataclass(frozen=True)
class DetectionOverrides:
    """The thresholds and classes the caller set; None (or no classes) means 'the model's default'."""

    score_threshold: float | None = None
    iou_threshold: float | None = None
    max_detections: int | None = None
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectCall:
    """Detect: the model (a registry name or 'auto'), the image, the caller's thresholds."""

    model: str
    image: ImageInput
    overrides: DetectionOverrides = field(default_factory=DetectionOverrides)


@dataclass(frozen=True)
class StreamDetectCall:
    """StreamDetect: the model and thresholds (from the first message), the frames, and how many may wait."""

    model: str
    overrides: DetectionOverrides
    frames: AsyncIterator[Frame]
    policy: BackpressurePolicy = BackpressurePolicy.BLOCK
    max_pending: int = 1


@dataclass(frozen=True)
class RecognizeCall:
    """Recognize: the model and the image to read."""

    model: str
    image: ImageInput


@dataclass(frozen=True)
class ClassifyImageCall:
    """ClassifyImage: the model, the image and how many labels to return."""

    model: str
    image: ImageInput
    top_k: int = 5


@dataclass(frozen=True)
class SegmentCall:
    """Segment: the model, the image, the caller's thresholds."""

    model: str
    image: ImageInput
    overrides: DetectionOverrides = field(default_factory=DetectionOverrides)


@dataclass(frozen=True)
class GenerateImageCall:
    """GenerateImage: the model and what to draw."""

    model: str
    request: ImageGenerationRequest
