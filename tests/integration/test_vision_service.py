"""The vision service through a real grpc.aio server: YOLOv8 on two backends, PP-OCRv4, orientation, bad inputs."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from aisemble.common.v1 import common_pb2
from aisemble.vision.v1 import vision_service_pb2 as pb
from tests.assets.pictures import bus_jpg, encode, png_bomb, render_document, render_line
from tests.conftest import status_details

ONNX, PT = "yolov8-fall", "yolov8-fall-ultralytics"


def _image(data: bytes) -> common_pb2.Image:
    return common_pb2.Image(data=data)


def _boxes(reply: pb.DetectResponse, min_score: float) -> list[tuple[str, float, tuple[float, ...]]]:
    return [
        (d.class_name, d.score, (d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max))
        for d in reply.detections
        if d.score >= min_score
    ]


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


async def _fails(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


# --- detection ---


@pytest.mark.parametrize("model", [ONNX, PT])
async def test_detect_finds_the_people_on_bus_jpg(vision, model):
    _server, stub, _, _ = vision
    reply = await stub.Detect(pb.DetectRequest(model=model, image=_image(bus_jpg())))
    assert (reply.image_width, reply.image_height) == (810, 1080)
    people = [d for d in reply.detections if d.class_name == "Normal" and d.score >= 0.3]
    assert len(people) >= 3, reply
    for d in reply.detections:
        assert d.class_id in (0, 1) and d.class_name == ("Normal", "Fall")[d.class_id]
        assert 0 <= d.box.x_min < d.box.x_max <= 810 and 0 <= d.box.y_min < d.box.y_max <= 1080
        assert d.box.y_max - d.box.y_min > 300  # whole standing people, in original pixels
    scores = [d.score for d in reply.detections]
    assert scores == sorted(scores, reverse=True)
    assert reply.selection.model == model and not reply.selection.automatic


async def test_onnx_and_ultralytics_backends_give_the_same_boxes(vision):
    _server, stub, _, _ = vision
    onnx = _boxes(await stub.Detect(pb.DetectRequest(model=ONNX, image=_image(bus_jpg()))), 0.5)
    pt = _boxes(await stub.Detect(pb.DetectRequest(model=PT, image=_image(bus_jpg()))), 0.5)
    assert len(onnx) == len(pt) >= 3
    for (name_a, score_a, box_a), (name_b, score_b, box_b) in zip(onnx, pt, strict=True):
        assert name_a == name_b
        assert abs(score_a - score_b) < 0.02
        assert max(abs(u - v) for u, v in zip(box_a, box_b, strict=True)) < 3.0, (box_a, box_b)
        assert _iou(box_a, box_b) > 0.98


async def test_thresholds_max_detections_and_class_filter(vision):
    _server, stub, _, _ = vision
    image = _image(bus_jpg())
    strict = await stub.Detect(pb.DetectRequest(model=ONNX, image=image, score_threshold=0.6))
    assert strict.detections and all(d.score >= 0.6 for d in strict.detections)
    loose = await stub.Detect(pb.DetectRequest(model=ONNX, image=image, score_threshold=0.05))
    assert len(loose.detections) > len(strict.detections)
    one = await stub.Detect(pb.DetectRequest(model=ONNX, image=image, score_threshold=0.05, max_detections=1))
    assert len(one.detections) == 1 and one.detections[0].score == pytest.approx(loose.detections[0].score)
    merged = await stub.Detect(pb.DetectRequest(model=ONNX, image=image, score_threshold=0.05, iou_threshold=0.1))
    assert len(merged.detections) < len(loose.detections)  # a low IoU threshold suppresses more overlaps
    falls = await stub.Detect(pb.DetectRequest(model=ONNX, image=image, score_threshold=0.01, class_names=["Fall"]))
    assert all(d.class_name == "Fall" for d in falls.detections)
    error = await _fails(
        stub.Detect(pb.DetectRequest(model=ONNX, image=image, class_names=["person"])),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "Normal, Fall" in error.details()
    _status, details = status_details(error)
    assert details["BadRequest"].field_violations[0].field == "class_names[0]"


async def test_auto_picks_a_detector_and_says_so(vision):
    _server, stub, _, _ = vision
    reply = await stub.Detect(pb.DetectRequest(model="auto", image=_image(bus_jpg())))
    assert reply.selection.automatic and reply.selection.model == ONNX and reply.selection.reason


async def test_nudenet_is_a_second_detector(vision):
    _server, stub, _, _ = vision
    reply = await stub.Detect(pb.DetectRequest(model="nudenet", image=_image(bus_jpg()), score_threshold=0.2))
    assert "FEET_COVERED" in {d.class_name for d in reply.detections}  # the people's shoes
    assert all(d.box.y_min > 700 for d in reply.detections if d.class_name == "FEET_COVERED")


async def test_wrong_task_and_unknown_model(vision):
    _server, stub, _, _ = vision
    error = await _fails(
        stub.Detect(pb.DetectRequest(model="ppocr-v4", image=_image(bus_jpg()))), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "ocr model" in error.details() and status_details(error)[1]["ErrorInfo"].reason == "MODEL_WRONG_TASK"
    error = await _fails(
        stub.Detect(pb.DetectRequest(model="yolo-nope", image=_image(bus_jpg()))), grpc.StatusCode.NOT_FOUND
    )
    assert status_details(error)[1]["ErrorInfo"].reason == "MODEL_NOT_FOUND"


async def test_invalid_detection_arguments_name_their_fields(vision):
    _server, stub, _, _ = vision
    error = await _fails(
        stub.Detect(pb.DetectRequest(image=_image(b""), score_threshold=1.5, iou_threshold=-0.1, max_detections=0)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    fields = {v.field for v in status_details(error)[1]["BadRequest"].field_violations}
    assert fields == {"model", "score_threshold", "iou_threshold", "max_detections"}
    error = await _fails(stub.Detect(pb.DetectRequest(model=ONNX)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "image" in error.details()


# --- OCR and classification ---


async def test_recognize_reads_a_rendered_line(vision):
    _server, stub, _, _ = vision
    picture = render_line("Hello gRPC mesh 2026")
    reply = await stub.Recognize(pb.RecognizeRequest(model="ppocr-v4", image=_image(encode(picture))))
    assert reply.lines, reply
    # PP-OCR's detector may cut a line into word groups: they come back left to right.
    assert "".join(reply.full_text.split()) == "HellogRPCmesh2026", reply.full_text
    assert reply.full_text == "\n".join(line.text for line in reply.lines)
    line = reply.lines[0]
    assert line.score > 0.8 and len(line.polygon) == 4
    xs, ys = [p.x for p in line.polygon], [p.y for p in line.polygon]
    assert 0 <= min(xs) < max(xs) <= picture.width and 0 <= min(ys) < max(ys) <= picture.height
    assert (reply.image_width, reply.image_height) == picture.size
    assert reply.selection.model == "ppocr-v4"


async def test_recognize_reads_lines_in_order(vision):
    _server, stub, _, _ = vision
    page = Image.new("RGB", (700, 300), "white")
    page.paste(render_line("first line"), (0, 0))
    page.paste(render_line("second line"), (0, 150))
    reply = await stub.Recognize(pb.RecognizeRequest(model="auto", image=_image(encode(page))))
    assert "".join(reply.full_text.split()) == "firstlinesecondline", reply.full_text
    tops = [min(p.y for p in line.polygon) for line in reply.lines]
    assert tops == sorted(tops)


@pytest.mark.parametrize(("rotate_ccw", "label"), [(0, "0"), (90, "270"), (180, "180"), (270, "90")])
async def test_classify_document_orientation(vision, rotate_ccw, label):
    _server, stub, _, _ = vision
    page = render_document().rotate(rotate_ccw, expand=True)
    reply = await stub.ClassifyImage(
        pb.ClassifyImageRequest(model="doc-orientation", image=_image(encode(page, "JPEG")), top_k=2)
    )
    assert len(reply.labels) == 2 and reply.labels[0].label == label and reply.labels[0].score > 0.8
    everything = await stub.ClassifyImage(pb.ClassifyImageRequest(model="doc-orientation", image=_image(encode(page))))
    assert sorted(x.label for x in everything.labels) == ["0", "180", "270", "90"]  # top_k 5 > 4 labels
    assert sum(x.score for x in everything.labels) == pytest.approx(1.0, abs=1e-3)


# --- bad and unusual images ---

BAD_IMAGES = {
    "empty": (b"", "empty"),
    "truncated jpeg": (encode(render_line("cut"), "JPEG")[:600], "truncated"),
    "text renamed .png": (b"just some text, saved as photo.png\n" * 3, "not a JPEG, PNG, WebP or BMP"),
    "decompression bomb": (png_bomb(), "too many pixels"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
async def test_bad_image_bytes_are_invalid_argument_on_every_rpc(vision, case):
    _server, stub, _, _ = vision
    data, expected = BAD_IMAGES[case]
    calls = [
        stub.Detect(pb.DetectRequest(model=ONNX, image=_image(data))),
        stub.Recognize(pb.RecognizeRequest(model="ppocr-v4", image=_image(data))),
        stub.ClassifyImage(pb.ClassifyImageRequest(model="doc-orientation", image=_image(data))),
    ]
    for call in calls:
        error = await _fails(call, grpc.StatusCode.INVALID_ARGUMENT)
        assert expected in error.details()
        _status, details = status_details(error)
        assert details["ErrorInfo"].reason == "INVALID_IMAGE"
        assert details["BadRequest"].field_violations[0].field == "image.data"


async def test_one_pixel_greyscale_and_rgba_images_are_served(vision):
    _server, stub, _, _ = vision
    pictures = {
        "1x1": encode(Image.new("RGB", (1, 1), "white")),
        "grey": encode(render_line("grey text", mode="L")),
        "rgba": encode(render_line("clear text", mode="RGBA")),
    }
    for name, data in pictures.items():
        detected = await stub.Detect(pb.DetectRequest(model=ONNX, image=_image(data)))
        assert detected.image_width >= 1, name
        detected = await stub.Detect(pb.DetectRequest(model=PT, image=_image(data)))
        assert detected.image_width >= 1, name
        read = await stub.Recognize(pb.RecognizeRequest(model="ppocr-v4", image=_image(data)))
        classified = await stub.ClassifyImage(pb.ClassifyImageRequest(model="doc-orientation", image=_image(data)))
        assert classified.labels, name
        if name != "1x1":
            assert "".join(read.full_text.split()) == {"grey": "greytext", "rgba": "cleartext"}[name]
    # A transparent background with black text stays legible (composited over white, not black).
    rgba = Image.new("RGBA", (400, 120), (0, 0, 0, 0))
    rgba.alpha_composite(render_line("alpha", mode="RGBA"))
    read = await stub.Recognize(pb.RecognizeRequest(model="ppocr-v4", image=_image(encode(rgba))))
    assert "alpha" in read.full_text


async def test_image_uris(vision, tmp_path):
    _server, stub, _, image_root = vision
    (image_root / "bus.jpg").write_bytes(bus_jpg())
    reply = await stub.Detect(pb.DetectRequest(model=ONNX, image=common_pb2.Image(uri=f"file://{image_root}/bus.jpg")))
    assert len([d for d in reply.detections if d.score >= 0.3]) >= 3
    (tmp_path / "outside.jpg").write_bytes(bus_jpg())
    cases = {
        f"file://{tmp_path}/outside.jpg": grpc.StatusCode.PERMISSION_DENIED,
        f"file://{image_root}/../outside.jpg": grpc.StatusCode.PERMISSION_DENIED,
        "file:///etc/passwd": grpc.StatusCode.PERMISSION_DENIED,
        "http://127.0.0.1:9/bus.jpg": grpc.StatusCode.INVALID_ARGUMENT,
        "https://example.com/bus.jpg": grpc.StatusCode.INVALID_ARGUMENT,
        f"file://{image_root}/missing.jpg": grpc.StatusCode.NOT_FOUND,
    }
    for uri, code in cases.items():
        error = await _fails(stub.Detect(pb.DetectRequest(model=ONNX, image=common_pb2.Image(uri=uri))), code)
        assert "image.uri" in error.details(), uri


# --- tasks without a registered model, health ---


async def test_segment_and_generate_without_a_model_say_what_to_register(vision):
    _server, stub, _, _ = vision
    error = await _fails(
        stub.Segment(pb.SegmentRequest(model="auto", image=_image(bus_jpg()))), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "image-segmentation" in error.details() and "provider: ultralytics" in error.details()
    assert status_details(error)[1]["ErrorInfo"].reason == "NO_MODEL_FOR_TASK"
    error = await _fails(
        stub.GenerateImage(pb.GenerateImageRequest(model="dall-e-3", prompt="a bus")), grpc.StatusCode.NOT_FOUND
    )
    assert "provider: openai" in error.details()
    error = await _fails(
        stub.GenerateImage(pb.GenerateImageRequest(model="auto", prompt="a bus")), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "image-generation" in error.details()


async def test_health_per_model_and_service(vision):
    _server, _stub, channel, _ = vision
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "aisemble.vision.v1.VisionService", ONNX, PT, "nudenet", "ppocr-v4", "doc-orientation"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
