"""Input images for every service: bytes or a file:// URI under configured roots, checked, limited, decoded to RGB."""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from aisemble.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError

__all__ = [
    "DEFAULT_FORMATS",
    "ROOTS_ENV",
    "DecodedImage",
    "ImageInput",
    "ImageLimits",
    "decode_image",
    "encode_png",
    "load_image",
    "read_image_uri",
]

#: Environment variable listing the directories (os.pathsep-separated) that `file://` URIs may name.
ROOTS_ENV = "AISEMBLE_IMAGE_ROOTS"
#: Environment variables overriding the byte and pixel limits.
MAX_BYTES_ENV = "AISEMBLE_IMAGE_MAX_BYTES"
MAX_PIXELS_ENV = "AISEMBLE_IMAGE_MAX_PIXELS"
#: The encodings accepted (PIL format names). Only their parsers ever see the caller's bytes.
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
_FORMAT_NAMES = "JPEG, PNG, WebP or BMP"


def _unpatched_open() -> Callable[..., Image.Image]:
    """PIL's own Image.open. Importing Ultralytics replaces it with a wrapper that, on a file PIL cannot identify,
    runs a requirements check for pi-heif and imports it: never what the caller's bytes should trigger."""
    opener = Image.open
    if getattr(opener, "__module__", "") == "ultralytics.utils.patches":
        opener = getattr(sys.modules["ultralytics.utils.patches"], "_image_open", opener)
    return opener


#: Taken once, at import: whatever Ultralytics does to PIL later, decoding here stays PIL's.
_PIL_OPEN = _unpatched_open()


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


@dataclass(frozen=True)
class ImageLimits:
    """What a server accepts: encoded size, decoded pixel count, formats, and the roots `file://` URIs may name.

    max_pixels stays below PIL's own decompression-bomb threshold (89.5 M pixels), so our check speaks first.
    """

    max_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 40_000_000
    roots: tuple[Path, ...] = ()
    formats: tuple[str, ...] = DEFAULT_FORMATS

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError("max_bytes and max_pixels must be >= 1")
        # Roots are compared after resolving symbolic links, on both sides.
        object.__setattr__(self, "roots", tuple(_real(Path(r).expanduser()) for r in self.roots))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImageLimits:
        """Limits from AISEMBLE_IMAGE_ROOTS, AISEMBLE_IMAGE_MAX_BYTES and AISEMBLE_IMAGE_MAX_PIXELS."""
        env = os.environ if environ is None else environ
        roots = tuple(Path(p) for p in env.get(ROOTS_ENV, "").split(os.pathsep) if p.strip())

        def number(key: str, default: int) -> int:
            try:
                return int(env[key]) if env.get(key) else default
            except ValueError:
                raise ValueError(f"{key} must be an integer (got {env[key]!r})") from None

        return cls(
            max_bytes=number(MAX_BYTES_ENV, cls.max_bytes),
            max_pixels=number(MAX_PIXELS_ENV, cls.max_pixels),
            roots=roots,
        )


@dataclass(frozen=True)
class ImageInput:
    """An image as a request carries it: encoded bytes or a URI (exactly one is set)."""

    data: bytes | None = None
    uri: str | None = None


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: `rgb` is (height, width, 3) uint8, upright (EXIF orientation applied)."""

    rgb: np.ndarray = field(repr=False)
    format: str = ""

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.rgb.shape[0])

    def bgr(self) -> np.ndarray:
        """The pixels in OpenCV's channel order (a new contiguous array)."""
        return np.ascontiguousarray(self.rgb[..., ::-1])


def _invalid(field_path: str, description: str) -> InvalidArgumentError:
    return InvalidArgumentError.for_field(field_path, description, reason="INVALID_IMAGE")


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode as 8-bit RGB; transparency is composited over white (text on a clear background stays legible)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        wide = np.asarray(image, dtype=np.uint16)
        image = Image.fromarray((wide >> 8).astype(np.uint8), "L")
    elif image.mode in ("I", "F"):
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float64), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def decode_image(data: bytes, limits: ImageLimits, field_path: str = "image.data") -> DecodedImage:
    """Decode encoded bytes to RGB; INVALID_ARGUMENT (reason INVALID_IMAGE) names what is wrong."""
    if not data:
        raise _invalid(field_path, "is empty: send the encoded image file (JPEG, PNG, WebP or BMP)")
    if len(data) > limits.max_bytes:
        raise _invalid(field_path, f"is {len(data)} bytes; the limit is {limits.max_bytes} bytes")
    try:
        image = _PIL_OPEN(io.BytesIO(data), formats=list(limits.formats))
    except Image.DecompressionBombError:
        raise _invalid(field_path, "declares too many pixels (a decompression bomb?)") from None
    except UnidentifiedImageError:
        raise _invalid(field_path, f"is not a {_FORMAT_NAMES} image (the bytes are not a known image file)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _invalid(field_path, f"is a damaged or truncated image file: {exc}") from None
    with image:
        width, height = image.size
        if width < 1 or height < 1:
            raise _invalid(field_path, f"declares an empty size {width}x{height}")
        if width * height > limits.max_pixels:
            raise _invalid(
                field_path, f"declares {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}"
            )
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = _to_rgb(upright)
        except Image.DecompressionBombError:
            raise _invalid(field_path, "declares too many pixels (a decompression bomb?)") from None
        except Exception as exc:  # noqa: BLE001 - whatever a decoder raises, the bytes are at fault
            detail = str(exc) or type(exc).__name__
            raise _invalid(field_path, f"is a damaged or truncated {image.format} image: {detail}") from None
    return DecodedImage(rgb=rgb, format=str(image.format))


def read_image_uri(uri: str, limits: ImageLimits, field_path: str = "image.uri") -> bytes:
    """The bytes of a `file://` URI under one of the roots.

    INVALID_ARGUMENT for another scheme, a host, a relative path; PERMISSION_DENIED outside the roots,
    for `..`, or through a symbolic link that leads out; NOT_FOUND for a missing file.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise _invalid(field_path, "is not a valid URI") from None
    scheme = parts.scheme.lower()
    if scheme != "file":
        shown = f"scheme '{scheme}'" if scheme else "no scheme"
        raise _invalid(field_path, f"only file:// URIs are accepted (got {shown})")
    if parts.netloc not in ("", "localhost"):
        raise _invalid(field_path, f"file:// URIs must not name a host (got '{parts.netloc}')")
    if parts.query or parts.fragment:
        raise _invalid(field_path, "file:// URIs take no query or fragment")
    text = unquote(parts.path)
    if "\x00" in text:
        raise _invalid(field_path, "contains a NUL character")
    lexical = PurePosixPath(text)
    if not lexical.is_absolute():
        raise _invalid(field_path, "must be an absolute path: file:///dir/image.jpg")
    if ".." in lexical.parts:
        raise PermissionDeniedError(f"{field_path}: '..' is not allowed in image paths", reason="IMAGE_PATH_DENIED")
    if not limits.roots:
        raise PermissionDeniedError(
            f"{field_path}: this server reads no image files: no image roots are configured ({ROOTS_ENV})",
            reason="IMAGE_PATH_DENIED",
        )
    path = Path(text)
    if not any(path.is_relative_to(root) for root in limits.roots):
        raise PermissionDeniedError(
            f"{field_path}: {text} is outside the directories this server reads images from",
            reason="IMAGE_PATH_DENIED",
        )
    real = _real(path)
    if not any(real.is_relative_to(root) for root in limits.roots):
        raise PermissionDeniedError(
            f"{field_path}: {text} leads through a symbolic link outside the directories this server reads images from",
            reason="IMAGE_PATH_DENIED",
        )
    return _read_regular_file(real, text, limits, field_path)


def _read_regular_file(real: Path, shown: str, limits: ImageLimits, field_path: str) -> bytes:
    # O_NOFOLLOW: a link swapped in after the check is refused; O_NONBLOCK: a FIFO cannot hang the worker.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise NotFoundError(f"{field_path}: no file at {shown}", reason="IMAGE_NOT_FOUND") from None
    except PermissionError:
        raise PermissionDeniedError(f"{field_path}: {shown} is not readable", reason="IMAGE_PATH_DENIED") from None
    except OSError as exc:
        raise PermissionDeniedError(
            f"{field_path}: {shown} cannot be opened ({exc.strerror})", reason="IMAGE_PATH_DENIED"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _invalid(field_path, f"{shown} is not a regular file")
        if info.st_size > limits.max_bytes:
            raise _invalid(field_path, f"{shown} is {info.st_size} bytes; the limit is {limits.max_bytes} bytes")
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        data = file.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise _invalid(field_path, f"{shown} is over the limit of {limits.max_bytes} bytes")
    return data


def load_image(image: ImageInput, limits: ImageLimits, field_path: str = "image") -> DecodedImage:
    """Read (for a URI) and decode an image. Blocking: call it from a worker thread."""
    if image.uri is not None:
        data = read_image_uri(image.uri, limits, f"{field_path}.uri")
        return decode_image(data, limits, f"{field_path}.uri")
    if image.data is None:
        raise _invalid(field_path, "is required: set data (a JPEG, PNG, WebP or BMP file) or uri")
    return decode_image(image.data, limits, f"{field_path}.data")


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array: (h, w) greyscale or (h, w, 3) RGB."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
