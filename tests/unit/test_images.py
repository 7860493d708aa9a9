"""aisemble.images: decoding, limits and file:// URIs under roots, with the bad inputs a server sees."""

from __future__ import annotations

import os

import grpc
import numpy as np
import pytest
from PIL import Image

from aisemble.errors import AisembleError
from aisemble.inputs.images import (
    DecodedImage,
    ImageInput,
    ImageLimits,
    decode_image,
    encode_png,
    load_image,
    read_image_uri,
)
from tests.assets.pictures import encode, png_bomb, render_line

LIMITS = ImageLimits()


def _fails(code: grpc.StatusCode, call, *args, contains: str = "") -> AisembleError:
    with pytest.raises(AisembleError) as caught:
        call(*args)
    assert caught.value.code.name == code.name, caught.value.message
    assert contains in caught.value.message, caught.value.message
    return caught.value


def test_jpeg_png_webp_bmp_decode_to_rgb():
    picture = Image.new("RGB", (40, 30), (200, 10, 20))
    for fmt in ("JPEG", "PNG", "WEBP", "BMP"):
        decoded = decode_image(encode(picture, fmt), LIMITS)
        assert isinstance(decoded, DecodedImage) and decoded.format == fmt
        assert (decoded.width, decoded.height) == (40, 30)
        assert decoded.rgb.shape == (30, 40, 3) and decoded.rgb.dtype == np.uint8
        assert abs(int(decoded.rgb[15, 20, 0]) - 200) < 8  # red stays in channel 0
        assert abs(int(decoded.bgr()[15, 20, 2]) - 200) < 8


def test_empty_bytes_are_invalid():
    error = _fails(grpc.StatusCode.INVALID_ARGUMENT, decode_image, b"", LIMITS, contains="empty")
    assert error.field_violations[0].field == "image.data"
    assert error.reason == "INVALID_IMAGE"


def test_truncated_jpeg_is_invalid():
    data = encode(render_line("truncated"), "JPEG")
    _fails(grpc.StatusCode.INVALID_ARGUMENT, decode_image, data[: len(data) // 2], LIMITS, contains="truncated")


def test_text_file_renamed_png_is_invalid():
    text = b"this is not a picture, only text saved as picture.png\n" * 4
    _fails(grpc.StatusCode.INVALID_ARGUMENT, decode_image, text, LIMITS, contains="not a JPEG, PNG, WebP or BMP")


def test_other_formats_are_refused():
    gif = encode(Image.new("P", (8, 8)), "GIF")
    _fails(grpc.StatusCode.INVALID_ARGUMENT, decode_image, gif, LIMITS, contains="not a JPEG")


def test_decompression_bomb_is_refused_before_decoding():
    bomb = png_bomb(30000, 30000)  # 900 M pixels in a few hundred bytes: PIL's own guard speaks
    assert len(bomb) < 2000
    _fails(grpc.StatusCode.INVALID_ARGUMENT, decode_image, bomb, LIMITS, contains="too many pixels")
    # Above our limit but below PIL's: our check speaks, naming the limit.
    _fails(grpc.StatusCode.INVALID_ARGUMENT, decode_image, png_bomb(5000, 5000), ImageLimits(max_pixels=10_000_000))
    error = _fails(grpc.StatusCode.INVALID_ARGUMENT, decode_image, png_bomb(200, 100), ImageLimits(max_pixels=10_000))
    assert "200x100" in error.message and "10000" in error.message


def test_byte_limit():
    data = encode(Image.new("RGB", (64, 64)), "BMP")
    _fails(grpc.StatusCode.INVALID_ARGUMENT, decode_image, data, ImageLimits(max_bytes=100), contains="limit is 100")


def test_one_pixel_image_decodes():
    decoded = decode_image(encode(Image.new("RGB", (1, 1), (1, 2, 3))), LIMITS)
    assert decoded.rgb.shape == (1, 1, 3) and decoded.rgb[0, 0].tolist() == [1, 2, 3]


def test_greyscale_becomes_three_equal_channels():
    decoded = decode_image(encode(Image.new("L", (5, 4), 77)), LIMITS)
    assert decoded.rgb.shape == (4, 5, 3) and (decoded.rgb == 77).all()


def test_rgba_is_composited_over_white():
    picture = Image.new("RGBA", (4, 2), (0, 0, 0, 0))  # fully transparent black
    picture.putpixel((0, 0), (10, 20, 30, 255))
    decoded = decode_image(encode(picture), LIMITS)
    assert decoded.rgb.shape == (2, 4, 3)
    assert decoded.rgb[0, 0].tolist() == [10, 20, 30]
    assert decoded.rgb[1, 3].tolist() == [255, 255, 255]


def test_sixteen_bit_greyscale_is_scaled():
    wide = Image.fromarray(np.full((3, 3), 65535, np.uint16))
    decoded = decode_image(encode(wide), LIMITS)
    assert (decoded.rgb == 255).all()


def test_exif_orientation_is_applied():
    picture = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(encode(picture, "JPEG", exif=exif.tobytes()), LIMITS)
    assert (decoded.width, decoded.height) == (20, 40)


# --- file:// URIs ---


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "ok.png").write_bytes(encode(Image.new("RGB", (3, 2))))
    return folder


def test_uri_under_a_root_is_read(root):
    limits = ImageLimits(roots=(root,))
    decoded = load_image(ImageInput(uri=f"file://{root}/ok.png"), limits)
    assert (decoded.width, decoded.height) == (3, 2)
    assert read_image_uri(f"file://localhost{root}/ok.png", limits)  # the only host allowed


def test_http_and_other_schemes_are_invalid(root):
    limits = ImageLimits(roots=(root,))
    for uri in ("http://example.com/a.png", "https://example.com/a.png", "ftp://x/a.png", "data:image/png;base64,AA"):
        error = _fails(grpc.StatusCode.INVALID_ARGUMENT, read_image_uri, uri, limits, contains="only file://")
        assert error.field_violations[0].field == "image.uri"
    _fails(grpc.StatusCode.INVALID_ARGUMENT, read_image_uri, f"{root}/ok.png", limits, contains="no scheme")
    _fails(grpc.StatusCode.INVALID_ARGUMENT, read_image_uri, "file://evil.example/etc/a.png", limits, contains="host")
    _fails(grpc.StatusCode.INVALID_ARGUMENT, read_image_uri, "file:ok.png", limits, contains="absolute")


def test_uri_outside_the_roots_is_denied(root, tmp_path):
    limits = ImageLimits(roots=(root,))
    (tmp_path / "secret.png").write_bytes(encode(Image.new("RGB", (3, 2))))
    error = _fails(grpc.StatusCode.PERMISSION_DENIED, read_image_uri, f"file://{tmp_path}/secret.png", limits)
    assert "outside" in error.message and error.reason == "IMAGE_PATH_DENIED"
    _fails(grpc.StatusCode.PERMISSION_DENIED, read_image_uri, "file:///etc/passwd", limits, contains="outside")
    _fails(grpc.StatusCode.PERMISSION_DENIED, read_image_uri, f"file://{root}/../secret.png", limits, contains="'..'")
    encoded = f"file://{root}/%2E%2E/secret.png"  # '..' written with percent escapes
    _fails(grpc.StatusCode.PERMISSION_DENIED, read_image_uri, encoded, limits, contains="'..'")


def test_symlink_out_of_the_root_is_denied(root, tmp_path):
    limits = ImageLimits(roots=(root,))
    (tmp_path / "secret.png").write_bytes(encode(Image.new("RGB", (3, 2))))
    os.symlink(tmp_path / "secret.png", root / "link.png")
    os.symlink(tmp_path, root / "dirlink")
    _fails(grpc.StatusCode.PERMISSION_DENIED, read_image_uri, f"file://{root}/link.png", limits, contains="symbolic")
    _fails(grpc.StatusCode.PERMISSION_DENIED, read_image_uri, f"file://{root}/dirlink/secret.png", limits)
    os.symlink(root / "ok.png", root / "inside.png")  # a link that stays inside is fine
    assert read_image_uri(f"file://{root}/inside.png", limits)


def test_uri_without_configured_roots_is_denied(root):
    _fails(
        grpc.StatusCode.PERMISSION_DENIED, read_image_uri, f"file://{root}/ok.png", ImageLimits(), contains="no image"
    )


def test_missing_file_directory_and_fifo(root):
    limits = ImageLimits(roots=(root,))
    _fails(grpc.StatusCode.NOT_FOUND, read_image_uri, f"file://{root}/nope.png", limits, contains="no file")
    (root / "sub").mkdir()
    _fails(grpc.StatusCode.INVALID_ARGUMENT, read_image_uri, f"file://{root}/sub", limits, contains="regular")
    os.mkfifo(root / "pipe.png")
    _fails(grpc.StatusCode.INVALID_ARGUMENT, read_image_uri, f"file://{root}/pipe.png", limits, contains="regular")


def test_large_file_is_refused_before_reading(root):
    (root / "big.bmp").write_bytes(encode(Image.new("RGB", (64, 64)), "BMP"))
    limits = ImageLimits(roots=(root,), max_bytes=1000)
    _fails(grpc.StatusCode.INVALID_ARGUMENT, read_image_uri, f"file://{root}/big.bmp", limits, contains="limit")


def test_missing_image_is_invalid():
    error = _fails(grpc.StatusCode.INVALID_ARGUMENT, load_image, ImageInput(), LIMITS, contains="required")
    assert error.field_violations[0].field == "image"


def test_limits_from_environment(tmp_path):
    env = {"AISEMBLE_IMAGE_ROOTS": f"{tmp_path}{os.pathsep}/srv/none", "AISEMBLE_IMAGE_MAX_PIXELS": "1000"}
    limits = ImageLimits.from_env(env)
    assert limits.roots[0] == tmp_path.resolve() and limits.max_pixels == 1000
    assert limits.max_bytes == ImageLimits().max_bytes
    with pytest.raises(ValueError, match="AISEMBLE_IMAGE_MAX_BYTES"):
        ImageLimits.from_env({"AISEMBLE_IMAGE_MAX_BYTES": "lots"})


def test_encode_png_round_trip():
    mask = np.zeros((5, 7), np.uint8)
    mask[1:3, 2:4] = 255
    decoded = decode_image(encode_png(mask), LIMITS)
    assert decoded.rgb[..., 0].tolist() == mask.tolist()


def test_decoding_ignores_the_pil_patch_of_ultralytics():
    import aisemble.inputs.images
    from aisemble.environment import apply_offline_defaults

    apply_offline_defaults()
    import ultralytics.utils.patches  # noqa: F401 - replaces PIL.Image.open on import

    assert Image.open is not aisemble.inputs.images._PIL_OPEN
    assert (
        aisemble.inputs.images._unpatched_open() is aisemble.inputs.images._PIL_OPEN
    )  # also when imported after Ultralytics
    _fails(grpc.StatusCode.INVALID_ARGUMENT, decode_image, b"plain text " * 20, LIMITS, contains="not a JPEG")
