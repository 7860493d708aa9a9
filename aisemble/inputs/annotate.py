"""Pictures of results: detections (boxes, labels, scores) and OCR text polygons drawn over the input image."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["LabelledBox", "LabelledPolygon", "draw_boxes", "draw_polygons", "save_png"]

#: Bright colours that stand out on photos and on white pages (one per label, chosen by the label's CRC-32).
_PALETTE = (
    (255, 56, 56),
    (255, 112, 31),
    (255, 178, 29),
    (72, 249, 10),
    (26, 147, 52),
    (0, 212, 187),
    (0, 194, 255),
    (100, 115, 255),
    (132, 56, 255),
    (203, 56, 255),
    (255, 55, 199),
)


@dataclass(frozen=True)
class LabelledBox:
    """An axis-aligned box in image pixels (origin top-left) with the label and score to print on it."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    label: str
    score: float


@dataclass(frozen=True)
class LabelledPolygon:
    """A polygon in image pixels (a recognised text line's outline) with its text and score."""

    points: tuple[tuple[float, float], ...]
    label: str
    score: float


def _colour(label: str) -> tuple[int, int, int]:
    return _PALETTE[zlib.crc32(label.encode("utf-8")) % len(_PALETTE)]


def _canvas(
    rgb: np.ndarray,
) -> tuple[Image.Image, ImageDraw.ImageDraw, int, ImageFont.FreeTypeFont | ImageFont.ImageFont]:
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    line = max(2, round(min(image.size) / 250))
    font = ImageFont.load_default(size=max(12, round(min(image.size) / 40)))
    return image, ImageDraw.Draw(image), line, font


def _caption(
    draw: ImageDraw.ImageDraw,
    at: tuple[float, float],
    text: str,
    colour: tuple[int, int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: tuple[int, int],
) -> None:
    """The text on a filled band just above `at` (below it when there is no room above), kept inside the image."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left + 6, bottom - top + 4
    x = min(max(0.0, at[0]), max(0.0, size[0] - width))
    y = at[1] - height if at[1] - height >= 0 else min(at[1], max(0.0, size[1] - height))
    draw.rectangle((x, y, x + width, y + height), fill=colour)
    light = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 150
    draw.text((x + 3 - left, y + 2 - top), text, fill=(0, 0, 0) if light else (255, 255, 255), font=font)


def draw_boxes(rgb: np.ndarray, boxes: Sequence[LabelledBox]) -> Image.Image:
    """The image (H x W x 3 uint8 RGB) with every box outlined and captioned `label score`; where captions
    overlap, the best-scoring box's is on top."""
    image, draw, line, font = _canvas(rgb)
    for box in boxes:
        draw.rectangle((box.x_min, box.y_min, box.x_max, box.y_max), outline=_colour(box.label), width=line)
    for box in sorted(boxes, key=lambda b: b.score):
        _caption(draw, (box.x_min, box.y_min), f"{box.label} {box.score:.2f}", _colour(box.label), font, image.size)
    return image


def draw_polygons(rgb: np.ndarray, polygons: Sequence[LabelledPolygon]) -> Image.Image:
    """The image with every polygon outlined and captioned with its text and score (OCR lines)."""
    image, draw, line, font = _canvas(rgb)
    for index, polygon in enumerate(polygons):
        if len(polygon.points) < 2:
            continue
        colour = _PALETTE[index % len(_PALETTE)]
        draw.line([*polygon.points, polygon.points[0]], fill=colour, width=line, joint="curve")
        top_left = min(polygon.points, key=lambda point: point[0] + point[1])
        _caption(draw, top_left, f"{polygon.label} {polygon.score:.2f}", colour, font, image.size)
    return image


def save_png(image: Image.Image, path: Path) -> None:
    """Write the picture as PNG (its folder must exist)."""
    image.save(path, format="PNG")
