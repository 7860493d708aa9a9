"""`aisemble detect|stream-detect|ocr|classify-image`: VisionService through the gateway, with pictures."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entrypoints.commands.gateway import add_gateway_arguments, call_gateway, gateway_channel, print_rpc_error
from entrypoints.commands.inputs import read_image
from entrypoints.commands.output import clip, json_line, print_json, print_selection, print_table

__all__ = ["Frames", "add_parsers", "print_detections", "read_frames"]

_IMAGE_HELP = "an image file (JPEG, PNG, WebP or BMP); `-` reads it from stdin"
_FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
_BACKPRESSURE = ("block", "drop-oldest", "drop-newest")


def _vision(args: argparse.Namespace, method: str, request: Any) -> Any:
    from aisemble.vision.v1 import vision_service_pb2_grpc

    return call_gateway(args, vision_service_pb2_grpc.VisionServiceStub, method, request)


def _detection_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {"model": args.model, "class_names": args.class_name or []}
    for name in ("score_threshold", "iou_threshold", "max_detections"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    return settings


def print_detections(detections: Any) -> None:
    """Detection messages as a table: #, class, score and the box's corners in pixels."""
    rows = [
        (i, d.class_name or d.class_id, f"{d.score:.3f}", *(f"{v:.1f}" for v in _corners(d.box)))
        for i, d in enumerate(detections)
    ]
    print_table(("#", "class", "score", "x_min", "y_min", "x_max", "y_max"), rows, _NUMERIC)


_NUMERIC = {"#", "score", "x_min", "y_min", "x_max", "y_max"}


def _corners(box: Any) -> tuple[float, float, float, float]:
    return box.x_min, box.y_min, box.x_max, box.y_max


def _write_picture(data: bytes, out: str, draw: Any) -> None:
    """Decode the image as the service does (EXIF orientation applied), draw on it, save it as PNG."""
    from aisemble.inputs.annotate import save_png
    from aisemble.inputs.images import ImageLimits, decode_image

    picture = draw(decode_image(data, ImageLimits()).rgb)
    try:
        save_png(picture, Path(out).expanduser())
    except OSError as exc:
        raise SystemExit(f"error: cannot write {out}: {exc.strerror or exc}") from None
    print(f"annotated image: {out}", file=sys.stderr)


def _detect(args: argparse.Namespace) -> int:
    from aisemble.common.v1 import common_pb2
    from aisemble.vision.v1 import vision_service_pb2 as pb

    data = read_image(args.image)
    reply = _vision(args, "Detect", pb.DetectRequest(image=common_pb2.Image(data=data), **_detection_settings(args)))
    if args.json:
        print_json(reply)
    else:
        print(f"{len(reply.detections)} detections in {reply.image_width}x{reply.image_height}")
        print_detections(reply.detections)
        print_selection(args.model, reply.selection)
    if args.annotate:
        from aisemble.inputs.annotate import LabelledBox, draw_boxes

        boxes = [LabelledBox(*_corners(d.box), d.class_name or str(d.class_id), d.score) for d in reply.detections]
        _write_picture(data, args.annotate, lambda rgb: draw_boxes(rgb, boxes))
    return 0


def _ocr(args: argparse.Namespace) -> int:
    from aisemble.common.v1 import common_pb2
    from aisemble.vision.v1 import vision_service_pb2 as pb

    data = read_image(args.image)
    reply = _vision(args, "Recognize", pb.RecognizeRequest(model=args.model, image=common_pb2.Image(data=data)))
    if args.json:
        print_json(reply)
    else:
        rows = []
        for i, line in enumerate(reply.lines):
            xs, ys = [p.x for p in line.polygon] or [0.0], [p.y for p in line.polygon] or [0.0]
            box = f"{min(xs):.0f},{min(ys):.0f} {max(xs):.0f},{max(ys):.0f}"
            rows.append((i, f"{line.score:.3f}", box, clip(line.text, 60)))
        print(f"{len(reply.lines)} lines in {reply.image_width}x{reply.image_height}")
        print_table(("#", "score", "box", "text"), rows, {"#", "score"})
        print_selection(args.model, reply.selection)
    if args.annotate:
        from aisemble.inputs.annotate import LabelledPolygon, draw_polygons

        polygons = [
            LabelledPolygon(tuple((p.x, p.y) for p in line.polygon), line.text, line.score) for line in reply.lines
        ]
        _write_picture(data, args.annotate, lambda rgb: draw_polygons(rgb, polygons))
    return 0


def _classify_image(args: argparse.Namespace) -> int:
    from aisemble.common.v1 import common_pb2
    from aisemble.vision.v1 import vision_service_pb2 as pb

    request = pb.ClassifyImageRequest(model=args.model, image=common_pb2.Image(data=read_image(args.image)))
    if args.top_k is not None:
        request.top_k = args.top_k
    reply = _vision(args, "ClassifyImage", request)
    if args.json:
        print_json(reply)
        return 0
    print_table(("label", "score"), [(s.label, f"{s.score:.3f}") for s in reply.labels], {"score"})
    print_selection(args.model, reply.selection)
    return 0


@dataclass
class Frames:
    """The encoded frames of a folder or a video, read lazily (gRPC's request thread pulls them). A frame that
    cannot be read ends the frames; `error` then says why (the iterator itself never raises)."""

    total: int | None
    encoded: Iterator[bytes]
    error: str | None = None


def read_frames(source: Path, stride: int = 1, limit: int | None = None) -> Frames:
    """The frames of a folder of images (sorted by name, sent as they are) or of a video file (every `stride`-th
    frame, JPEG-encoded), at most `limit`, with how many there will be when known."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in _FRAME_SUFFIXES and p.is_file())
        if not files:
            raise SystemExit(f"error: {source} holds no image files ({', '.join(sorted(_FRAME_SUFFIXES))})")
        files = files[::stride][:limit]

        def images() -> Iterator[bytes]:
            for path in files:
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    frames.error = f"cannot read {path}: {exc.strerror or exc}"
                    return
                yield data

        frames = Frames(len(files), images())
        return frames
    if not source.is_file():
        raise SystemExit(f"error: no folder or video file at {source}")
    import cv2

    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise SystemExit(f"error: OpenCV cannot read {source} as a video")
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    total = -(-count // stride) if count > 0 else None
    if total is not None and limit is not None:
        total = min(total, limit)
    ok, first = capture.read()
    if not ok:
        capture.release()
        raise SystemExit(f"error: {source} has no frames OpenCV can decode")

    def video() -> Iterator[bytes]:
        frame, index, sent = first, 0, 0
        try:
            while limit is None or sent < limit:
                if index % stride == 0:
                    encoded, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
                    if not encoded:
                        frames.error = f"cannot encode frame {index} of {source} as JPEG"
                        return
                    sent += 1
                    yield jpeg.tobytes()
                more, frame = capture.read()
                if not more:
                    return
                index += 1
        finally:
            capture.release()

    frames = Frames(total, video())
    return frames


def _stream_detect(args: argparse.Namespace) -> int:
    import grpc
    from tqdm import tqdm

    from aisemble.common.v1 import common_pb2
    from aisemble.vision.v1 import vision_service_pb2 as pb
    from aisemble.vision.v1 import vision_service_pb2_grpc

    frames = read_frames(Path(args.source).expanduser(), args.stride, args.max_frames)
    settings = _detection_settings(args)
    policy = pb.BackpressurePolicy.Value("BACKPRESSURE_POLICY_" + args.backpressure.upper().replace("-", "_"))

    def requests() -> Iterator[pb.StreamDetectRequest]:
        for index, frame in enumerate(frames.encoded):
            request = pb.StreamDetectRequest(frame=common_pb2.Image(data=frame), frame_index=index)
            if index == 0:
                request.MergeFrom(pb.StreamDetectRequest(backpressure_policy=policy, **settings))
                if args.max_pending_frames is not None:
                    request.max_pending_frames = args.max_pending_frames
            yield request

    started, frames_seen, dropped, found, selection = time.monotonic(), 0, 0, 0, None
    with (
        gateway_channel(args) as channel,
        tqdm(total=frames.total, unit="frame", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True) as bar,
    ):
        stub = vision_service_pb2_grpc.VisionServiceStub(channel)
        try:
            for reply in stub.StreamDetect(requests(), timeout=args.timeout):
                selection = selection or (reply.selection if reply.HasField("selection") else None)
                frames_seen += 1
                dropped += reply.dropped
                found += len(reply.detections)
                bar.update(1)
                if args.json:
                    bar.write(json_line(reply))
                    continue
                shown = ", ".join(f"{d.class_name or d.class_id} {d.score:.2f}" for d in reply.detections)
                state = "dropped" if reply.dropped else f"{len(reply.detections)} detections"
                bar.write(f"frame {reply.frame_index:>5}  {state}" + (f": {shown}" if shown else ""))
        except grpc.RpcError as exc:
            return print_rpc_error(exc)
    rate = frames_seen / max(time.monotonic() - started, 1e-9)
    print(f"{frames_seen} frames ({dropped} dropped), {found} detections, {rate:.1f} frames/s", file=sys.stderr)
    if selection is not None and not args.json:
        print_selection(args.model, selection)
    if frames.error:
        print(f"error: {frames.error}; the stream ended there", file=sys.stderr)
        return 1
    return 0


def _detection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="auto", help="an OBJECT_DETECTION model, or auto (default)")
    parser.add_argument("--score-threshold", type=float, help="drop detections scoring below this, in [0, 1]")
    parser.add_argument("--iou-threshold", type=float, help="non-maximum suppression overlap, in [0, 1]")
    parser.add_argument("--max-detections", type=int, help="the most detections per image")
    parser.add_argument("--class", dest="class_name", action="append", help="only this class (repeatable)")


def _image_command(sub: Any, name: str, text: str, model_help: str, timeout: float = 60.0) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=text)
    parser.add_argument("image", help=_IMAGE_HELP)
    parser.add_argument("--model", default="auto", help=model_help)
    parser.add_argument("--json", action="store_true", help="print the response as one JSON object")
    add_gateway_arguments(parser, timeout=timeout)
    return parser


def add_parsers(sub: Any) -> None:
    """`detect`, `stream-detect`, `ocr` and `classify-image` (sub: the top-level add_subparsers())."""
    detect = sub.add_parser("detect", help="objects in an image, boxes drawn with --annotate (VisionService.Detect)")
    detect.add_argument("image", help=_IMAGE_HELP)
    _detection_arguments(detect)
    detect.add_argument("--annotate", metavar="OUT.png", help="write the image with boxes, labels and scores")
    detect.add_argument("--json", action="store_true", help="print the response as one JSON object")
    add_gateway_arguments(detect, timeout=60.0)
    detect.set_defaults(handler=_detect)

    stream = sub.add_parser(
        "stream-detect", help="a folder of frames or a video through VisionService.StreamDetect, frame by frame"
    )
    stream.add_argument("source", help="a folder of image files (sorted by name) or a video file OpenCV reads")
    _detection_arguments(stream)
    stream.add_argument("--stride", type=_positive, default=1, help="send every N-th frame of a video or folder")
    stream.add_argument("--max-frames", type=_positive, help="stop after this many frames")
    stream.add_argument("--backpressure", choices=_BACKPRESSURE, default="block", help="when frames come too fast")
    stream.add_argument("--max-pending-frames", type=_positive, help="frames that may wait for the model")
    stream.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    stream.add_argument("--json", action="store_true", help="one JSON object per frame, one per line")
    add_gateway_arguments(stream, timeout=600.0)
    stream.set_defaults(handler=_stream_detect)

    ocr = _image_command(
        sub, "ocr", "text in an image, polygons drawn with --annotate (Recognize)", "an OCR model, or auto (default)"
    )
    ocr.add_argument("--annotate", metavar="OUT.png", help="write the image with text polygons and the text read")
    ocr.set_defaults(handler=_ocr)
    classify = _image_command(
        sub,
        "classify-image",
        "whole-image labels (VisionService.ClassifyImage)",
        "an IMAGE_CLASSIFICATION model, or auto (default)",
    )
    classify.add_argument("--top-k", type=int, help="labels to return")
    classify.set_defaults(handler=_classify_image)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value
