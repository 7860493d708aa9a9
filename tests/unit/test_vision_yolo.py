"""The numpy YOLOv8 pre/post-processing of the ONNX detector: letterbox geometry, decode, NMS (no server needed)."""

from __future__ import annotations

import numpy as np
import pytest

from services.vision.yolo import PAD_VALUE, decode_yolov8, letterbox, nms, to_input_tensor


def test_letterbox_keeps_the_aspect_ratio_and_centres():
    rgb = np.full((1080, 810, 3), 7, np.uint8)
    padded, box = letterbox(rgb, (640, 640))
    assert padded.shape == (640, 640, 3)
    assert box.gain == pytest.approx(640 / 1080)
    assert (box.width, box.height) == (810, 1080) and box.pad_y == 0
    assert box.pad_x == 80  # 810 * 0.5926 = 480 wide, 80 px of grey on each side
    assert (padded[:, :80] == PAD_VALUE).all() and (padded[:, 560:] == PAD_VALUE).all()
    assert (padded[:, 80:560] == 7).all()
    tensor = to_input_tensor(padded)
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32
    assert tensor.max() == pytest.approx(PAD_VALUE / 255)


def test_letterbox_of_a_one_pixel_image():
    padded, box = letterbox(np.zeros((1, 1, 3), np.uint8), (320, 320))
    assert padded.shape == (320, 320, 3) and box.gain == 320


def test_nms_matches_torchvision():
    import torch
    from torchvision.ops import nms as torch_nms

    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 500, (300, 2)).astype(np.float32)
    sizes = rng.uniform(10, 120, (300, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + sizes], axis=1)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    for threshold in (0.3, 0.5, 0.7):
        expected = torch_nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
        assert nms(boxes, scores, threshold).tolist() == expected.tolist()


def _head(anchors: list[tuple[float, float, float, float, list[float]]], classes: int) -> np.ndarray:
    """A raw YOLOv8 output (1, 4 + classes, anchors) from (cx, cy, w, h, class scores) rows."""
    rows = [[cx, cy, w, h, *scores] for cx, cy, w, h, scores in anchors]
    out = np.asarray(rows, np.float32).T[None]
    assert out.shape == (1, 4 + classes, len(anchors))
    return out


def test_decode_maps_boxes_back_to_original_pixels():
    _, box = letterbox(np.zeros((1080, 810, 3), np.uint8), (640, 640))
    # A box centred at (320, 320) in the network input, 60 x 120: in the original image
    # x: (290 - 80) / g .. (350 - 80) / g, y: 260 / g .. 380 / g with g = 640 / 1080.
    out = _head([(320, 320, 60, 120, [0.9, 0.1]), (10, 10, 4, 4, [0.05, 0.1])], classes=2)
    xyxy, scores, labels = decode_yolov8(out, box, 0.25, 0.7, 300)
    g = 640 / 1080
    assert len(xyxy) == 1 and xyxy[0].tolist() == pytest.approx([210 / g, 260 / g, 270 / g, 380 / g], abs=1e-3)
    assert scores.tolist() == pytest.approx([0.9]) and labels.tolist() == [0]


def test_decode_suppresses_overlaps_per_class_only():
    box = letterbox(np.zeros((640, 640, 3), np.uint8), (640, 640))[1]
    out = _head(
        [
            (100, 100, 50, 50, [0.9, 0.0]),
            (102, 100, 50, 50, [0.8, 0.0]),  # same class, overlapping: suppressed
            (101, 100, 50, 50, [0.0, 0.7]),  # other class, same place: kept
            (400, 400, 50, 50, [0.6, 0.0]),
        ],
        classes=2,
    )
    xyxy, scores, labels = decode_yolov8(out, box, 0.25, 0.5, 300)
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.6]) and labels.tolist() == [0, 1, 0]
    _, scores, _ = decode_yolov8(out, box, 0.25, 0.5, 2)
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    _, scores, labels = decode_yolov8(out, box, 0.25, 0.5, 300, class_ids=(1,))
    assert labels.tolist() == [1]
    xyxy, scores, labels = decode_yolov8(out, box, 0.95, 0.5, 300)
    assert xyxy.shape == (0, 4) and scores.size == labels.size == 0


def test_decode_clips_to_the_image():
    box = letterbox(np.zeros((100, 200, 3), np.uint8), (640, 640))[1]
    out = _head([(5, 170, 100, 100, [0.9])], classes=1)  # pokes out of the image on the left and top
    xyxy, _, _ = decode_yolov8(out, box, 0.25, 0.7, 300)
    assert xyxy[0, 0] == 0 and xyxy[0, 1] == 0 and xyxy[0, 2] <= 200 and xyxy[0, 3] <= 100
