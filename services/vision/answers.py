"""What each call of the vision service answers: its result and the model that served it (`Resolved`)."""

from __future__ import annotations

from dataclasses import dataclass

from aisemble.resolution import Resolved
from services.vision.frames import FrameOutcome
from services.vision.types import (
    ClassificationResult,
    DetectionResult,
    ImageGenerationResult,
    OcrResult,
    SegmentationResult,
)

__all__ = [
    "ClassifyImageAnswer",
    "DetectAnswer",
    "FrameAnswer",
    "GenerateImageAnswer",
    "RecognizeAnswer",
    "SegmentAnswer",
]


@dataclass(frozen=True)
class DetectAnswer:
    """The detections and the model that found them."""

    resolved: Resolved
    result: DetectionResult


@dataclass(frozen=True)
class FrameAnswer:
    """The outcome of one frame of a stream (its detections, or dropped) and the model that ran it."""

    resolved: Resolved
    outcome: FrameOutcome[DetectionResult]


@dataclass(frozen=True)
class RecognizeAnswer:
    """The text lines and the model that read them."""

    resolved: Resolved
    result: OcrResult


@dataclass(frozen=True)
class ClassifyImageAnswer:
    """The best labels and the model that chose them."""

    resolved: Resolved
    result: ClassificationResult


@dataclass(frozen=True)
class SegmentAnswer:
    """The instances, each mask also encoded as an 8-bit PNG (255 inside, 0 outside), and the model."""

    resolved: Resolved
    result: SegmentationResult
    pngs: tuple[bytes, ...]


@dataclass(frozen=True)
class GenerateImageAnswer:
    """The generated images and the model that drew them."""

    resolved: Resolved
    result: ImageGenerationResult
