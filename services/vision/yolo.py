"""YOLOv8 pre- and post-processing in numpy: letterbox, decode, class-aware NMS, boxes back to image pixels."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Letterbox", "decode_yolov8", "letterbox", "nms", "to_input_tensor"]

#: Grey of the padding, as Ultralytics pads.
PAD_VALUE = 114
#: Offset added per class before NMS so that boxes of different classes never suppress each other.
_CLASS_OFFSET = 7680.0
#: At most this many candidates enter NMS (Ultralytics' max_nms).
_MAX_CANDIDATES = 30000


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the network input: scale, then padding (left, top)."""

    gain: float
    pad_x: float
    pad_y: float
    width: int  # original image
    height: int


def letterbox(rgb: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and pad to `size` (height, width), centred, as Ultralytics' LetterBox."""
    height, width = rgb.shape[:2]
    target_h, target_w = size
    gain = min(target_h / height, target_w / width)
    new_w, new_h = round(width * gain), round(height * gain)
    new_w, new_h = max(1, min(target_w, new_w)), max(1, min(target_h, new_h))
    resized = (
        rgb if (new_w, new_h) == (width, height) else cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    )
    dw, dh = (target_w - new_w) / 2, (target_h - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return padded, Letterbox(gain=gain, pad_x=float(left), pad_y=float(top), width=width, height=height)


def to_input_tensor(padded_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 in [0, 1]."""
    return np.ascontiguousarray(padded_rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first (as torchvision.ops.nms)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        if not rest.size:
            break
        inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_yolov8(
    output: np.ndarray,
    box: Letterbox,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    class_ids: tuple[int, ...] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's raw YOLOv8 head output (4 + classes, anchors) into (xyxy, scores, class ids).

    Boxes come back in pixels of the original image, clipped to it, best score first. The steps follow
    Ultralytics' non_max_suppression (single label per box, class-aware) and scale_boxes.
    """
    predictions = output[0] if output.ndim == 3 else output
    predictions = predictions.T  # (anchors, 4 + classes)
    class_scores = predictions[:, 4:]
    labels = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(labels.size), labels]
    keep = scores > score_threshold
    if class_ids:
        keep &= np.isin(labels, np.asarray(class_ids))
    xywh, scores, labels = predictions[keep, :4], scores[keep], labels[keep]
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    if not scores.size:
        return empty
    if scores.size > _MAX_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:_MAX_CANDIDATES]
        xywh, scores, labels = xywh[top], scores[top], labels[top]
    xyxy = np.empty_like(xywh)
    xyxy[:, 0] = xywh[:, 0] - xywh[:, 2] / 2
    xyxy[:, 1] = xywh[:, 1] - xywh[:, 3] / 2
    xyxy[:, 2] = xywh[:, 0] + xywh[:, 2] / 2
    xyxy[:, 3] = xywh[:, 1] + xywh[:, 3] / 2
    offsets = labels[:, None].astype(xyxy.dtype) * _CLASS_OFFSET
    kept = nms(xyxy + offsets, scores, iou_threshold)[:max_detections]
    xyxy, scores, labels = xyxy[kept], scores[kept], labels[kept]
    xyxy[:, [0, 2]] = np.clip((xyxy[:, [0, 2]] - box.pad_x) / box.gain, 0, box.width)
    xyxy[:, [1, 3]] = np.clip((xyxy[:, [1, 3]] - box.pad_y) / box.gain, 0, box.height)
    return xyxy.astype(np.float32), scores.astype(np.float32), labels.astype(np.int64)
