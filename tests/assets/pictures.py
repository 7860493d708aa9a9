"""Pictures the vision and multimodal tests use, made here rather than stored: rendered text, encodings, bombs."""

from __future__ import annotations

import importlib.util
import io
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["bus_jpg", "encode", "font_path", "png_bomb", "render_document", "render_line"]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def bus_jpg() -> bytes:
    """Ultralytics' own sample photo (810x1080, people beside a bus), shipped inside the ultralytics wheel."""
    return (_package_dir("ultralytics") / "assets" / "bus.jpg").read_bytes()


def font_path() -> Path:
    """A TrueType font that exists on this machine: DejaVu Sans from the system, else matplotlib's copy."""
    candidates = [
        Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
        *sorted(Path("/usr/share/fonts").rglob("DejaVuSans.ttf")),
    ]
    if importlib.util.find_spec("matplotlib") is not None:
        candidates.append(_package_dir("matplotlib") / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("no DejaVuSans.ttf on this machine (install fonts-dejavu-core or matplotlib)")


def encode(image: Image.Image, format: str = "PNG", **options: object) -> bytes:
    """The image as an encoded file."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def render_line(text: str, size: int = 48, mode: str = "RGB") -> Image.Image:
    """One line of black text on white, with a margin."""
    font = ImageFont.truetype(str(font_path()), size)
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("RGB", (right - left + 2 * size, bottom - top + 2 * size), "white")
    ImageDraw.Draw(image).text((size - left, size - top), text, fill="black", font=font)
    return image.convert(mode) if mode != "RGB" else image


def render_document(lines: int = 15) -> Image.Image:
    """A page of text, upright (for the orientation classifier)."""
    font = ImageFont.truetype(str(font_path()), 28)
    sentences = [
        "Ai-semble serves models over gRPC.",
        "Detection, OCR and classification",
        "run in worker threads, never on",
        "the event loop. Streams keep",
        "memory bounded with backpressure.",
    ]
    image = Image.new("RGB", (800, 1000), "white")
    draw = ImageDraw.Draw(image)
    for i in range(lines):
        draw.text((40, 40 + i * 60), sentences[i % len(sentences)], fill="black", font=font)
    return image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A few hundred bytes declaring a huge 1-bit greyscale PNG (the pixel data is never reached)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + (width + 7) // 8) * 8)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")
