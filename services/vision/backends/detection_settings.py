"""The registry params every detection backend shares: default thresholds and the input size."""

from __future__ import annotations

from dataclasses import dataclass

from aisemble.hosting.settings import ModelSettings, setting
from services.vision.types import DetectionParams

__all__ = ["DetectionSettings"]

_DEFAULT = DetectionParams()


@dataclass(frozen=True)
class DetectionSettings(ModelSettings):
    """A detector's defaults for a request that sets none (as Ultralytics': 0.25 / 0.7 / 300) and `imgsz`, the
    input side (or [height, width]); not set: the artifact manifest's, else the backend's own default."""

    score_threshold: float = setting(_DEFAULT.score_threshold, minimum=0, maximum=1)
    iou_threshold: float = setting(_DEFAULT.iou_threshold, minimum=0, maximum=1)
    max_detections: int = setting(_DEFAULT.max_detections, minimum=1)
    imgsz: int | tuple[int, ...] | None = setting(None, minimum=1, min_items=2, max_items=2)

    def defaults(self) -> DetectionParams:
        """The thresholds a request that sets none gets."""
        return DetectionParams(
            score_threshold=self.score_threshold,
            iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
        )
