"""Vision benchmark: bare ONNX Runtime vs Detect through the service, Ultralytics vs ONNX, StreamDetect vs unary."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc

from aisemble.common.v1 import common_pb2
from aisemble.config.models import load_models
from aisemble.environment import apply_offline_defaults
from aisemble.hosting.backend import RequestContext, create_backend
from aisemble.inputs.images import ImageLimits, decode_image
from aisemble.store.model_store import ModelStore, default_store_root
from aisemble.vision.v1 import vision_service_pb2 as pb
from aisemble.vision.v1 import vision_service_pb2_grpc
from bench.common import Mesh, median, print_table

ONNX, PT, SMALL = "yolov8-fall", "yolov8-fall-ultralytics", "nudenet"
CALLS = 12  # timed calls per latency row (YOLOv8 at 640 px is ~0.5 s a call on 2 cores)
FRAMES = 30  # frames per stream / unary run


def _bus() -> bytes:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations
    return (Path(next(iter(spec.submodule_search_locations))) / "assets" / "bus.jpg").read_bytes()


def _median_ms(call: Callable[[], object], calls: int = CALLS, warmup: int = 2) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return median(times) * 1000


def _bare_rows(image_bytes: bytes) -> dict[str, float]:
    """In this process, no gRPC: the ONNX session alone, our whole ONNX pipeline, Ultralytics' predict."""
    from services.vision.yolo import letterbox, to_input_tensor

    registry, store = load_models(), ModelStore(default_store_root())
    onnx = create_backend(registry[ONNX], store)
    onnx.load()
    image = decode_image(image_bytes, ImageLimits())
    tensor = to_input_tensor(letterbox(image.rgb, onnx.input_size)[0])  # type: ignore[attr-defined]
    session = onnx.session  # type: ignore[attr-defined]
    rows = {
        "bare: ORT session.run (640x640 tensor)": _median_ms(lambda: session.run(None, {"images": tensor})),
        "bare: decode + letterbox + ORT + NMS": _median_ms(
            lambda: onnx.run(_request(image_bytes, onnx), RequestContext())
        ),
    }
    ultralytics = create_backend(registry[PT], store)
    ultralytics.load()
    rows["bare: decode + Ultralytics predict (.pt)"] = _median_ms(
        lambda: ultralytics.run(_request(image_bytes, ultralytics), RequestContext())
    )
    onnx.cleanup()
    ultralytics.cleanup()
    return rows


def _request(image_bytes: bytes, backend: object) -> object:
    """A DetectionRequest with the backend's defaults, decoding the image as the service does."""
    from services.vision.types import DetectionRequest

    return DetectionRequest(decode_image(image_bytes, ImageLimits()), backend.defaults)  # type: ignore[attr-defined]


def _frames(model: str, image_bytes: bytes, count: int) -> Iterator[pb.StreamDetectRequest]:
    for index in range(count):
        message = pb.StreamDetectRequest(frame=common_pb2.Image(data=image_bytes), frame_index=index)
        if index == 0:
            message.model = model
        yield message


def _fps(
    stub: vision_service_pb2_grpc.VisionServiceStub, model: str, image_bytes: bytes, frames: int
) -> tuple[float, float]:
    """(unary calls per second one after the other, StreamDetect frames per second), same frames."""
    request = pb.DetectRequest(model=model, image=common_pb2.Image(data=image_bytes))
    for _ in range(2):
        stub.Detect(request, timeout=60)
    started = time.perf_counter()
    for _ in range(frames):
        stub.Detect(request, timeout=60)
    unary = frames / (time.perf_counter() - started)
    list(stub.StreamDetect(_frames(model, image_bytes, 2), timeout=120))
    started = time.perf_counter()
    replies = list(stub.StreamDetect(_frames(model, image_bytes, frames), timeout=600))
    stream = frames / (time.perf_counter() - started)
    assert len(replies) == frames and not any(r.dropped for r in replies)
    return unary, stream


def main() -> None:
    """Run every measurement, print the table and the ratios."""
    apply_offline_defaults()
    image_bytes = _bus()
    bare = _bare_rows(image_bytes)
    mesh = Mesh([ONNX, PT, SMALL], services=["vision"], gateway=False)
    with mesh, grpc.insecure_channel(mesh.addresses["vision"]) as channel:
        stub = vision_service_pb2_grpc.VisionServiceStub(channel)

        def detect(model: str) -> Callable[[], object]:
            request = pb.DetectRequest(model=model, image=common_pb2.Image(data=image_bytes))
            return lambda: stub.Detect(request, timeout=60)

        served = {
            "service: Detect yolov8-fall (ONNX Runtime backend)": _median_ms(detect(ONNX)),
            "service: Detect yolov8-fall-ultralytics (.pt backend)": _median_ms(detect(PT)),
            "service: Detect nudenet (ONNX, 320 px)": _median_ms(detect(SMALL)),
        }
        small_unary, small_stream = _fps(stub, SMALL, image_bytes, FRAMES)
        big_unary, big_stream = _fps(stub, ONNX, image_bytes, FRAMES // 3)
    rows = [[name, ms, 1000 / ms] for name, ms in {**bare, **served}.items()]
    rows += [
        [f"service: {FRAMES} unary Detect, nudenet (one after another)", 1000 / small_unary, small_unary],
        [f"service: StreamDetect {FRAMES} frames, nudenet", 1000 / small_stream, small_stream],
        [f"service: {FRAMES // 3} unary Detect, yolov8-fall", 1000 / big_unary, big_unary],
        [f"service: StreamDetect {FRAMES // 3} frames, yolov8-fall", 1000 / big_stream, big_stream],
    ]
    print(f"bus.jpg (810x1080 JPEG, {len(image_bytes)} bytes); service in its own process; medians of {CALLS} calls")
    print_table(["measurement", "ms per image", "images/s"], rows)
    service_onnx = served["service: Detect yolov8-fall (ONNX Runtime backend)"]
    service_pt = served["service: Detect yolov8-fall-ultralytics (.pt backend)"]
    ratios = [
        ["Detect via service / bare ORT session.run", service_onnx / bare["bare: ORT session.run (640x640 tensor)"]],
        ["Detect via service / bare ONNX pipeline", service_onnx / bare["bare: decode + letterbox + ORT + NMS"]],
        ["Ultralytics .pt / ONNX backend (via service)", service_pt / service_onnx],
        [
            "Ultralytics .pt / ONNX pipeline (bare)",
            bare["bare: decode + Ultralytics predict (.pt)"] / bare["bare: decode + letterbox + ORT + NMS"],
        ],
        ["StreamDetect fps / unary fps (nudenet)", small_stream / small_unary],
        ["StreamDetect fps / unary fps (yolov8-fall)", big_stream / big_unary],
    ]
    print_table(["ratio", "value"], ratios)


if __name__ == "__main__":
    main()
