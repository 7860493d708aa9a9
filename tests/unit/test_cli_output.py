"""The CLI's own plumbing without a mesh: tables sized to their content, registry entries from YAML-shaped data,
frames from a folder or a video, and the drawing of boxes and OCR polygons."""

from __future__ import annotations

import numpy as np
import pytest

from aisemble.inputs.annotate import LabelledBox, LabelledPolygon, draw_boxes, draw_polygons
from entrypoints.commands.output import table_lines
from entrypoints.commands.registry import model_from_entry
from entrypoints.commands.vision import read_frames


def test_columns_are_as_wide_as_their_widest_cell():
    lines = table_lines(("model", "requests"), [("a-very-long-model-name-indeed", 3), ("x", 12345)], right={"requests"})
    assert lines == [
        "model                          requests",
        "a-very-long-model-name-indeed         3",
        "x                                 12345",
    ]


def test_a_registry_entry_keeps_its_fields_and_names_what_is_wrong():
    model = model_from_entry("m", {"task": "object-detection", "provider": "onnxruntime", "tags": ["a"]}, "f.yaml")
    assert model.name == "m" and model.task == 5 and list(model.tags) == ["a"]
    with pytest.raises(SystemExit, match=r"f\.yaml: task .detect. is not one of"):
        model_from_entry("m", {"task": "detect"}, "f.yaml")
    with pytest.raises(SystemExit, match=r"f\.yaml: .*colour"):
        model_from_entry("m", {"colour": "red"}, "f.yaml")


def test_frames_come_from_a_folder_in_name_order_and_from_a_video(tmp_path):
    import cv2

    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(name.encode())
    frames = read_frames(tmp_path)
    assert frames.total == 2 and list(frames.encoded) == [b"a.jpg", b"b.png"] and frames.error is None
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    for shade in range(5):
        writer.write(np.full((24, 32, 3), shade * 50, np.uint8))
    writer.release()
    frames = read_frames(video, stride=2)
    decoded = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_GRAYSCALE) for f in frames.encoded]
    assert frames.total == 3 and [round(d.mean() / 50) for d in decoded] == [0, 2, 4]


def test_a_frame_that_cannot_be_read_ends_the_frames_with_a_reason(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(name.encode())
    frames = read_frames(tmp_path)
    (tmp_path / "b.jpg").unlink()  # gone between the listing and the stream reaching it
    assert list(frames.encoded) == [b"a.jpg"] and frames.total == 3
    assert frames.error and frames.error.startswith(f"cannot read {tmp_path / 'b.jpg'}")


def test_boxes_and_polygons_are_drawn_where_they_are():
    white = np.full((200, 300, 3), 255, np.uint8)
    boxed = np.asarray(draw_boxes(white, [LabelledBox(100, 100, 200, 180, "Normal", 0.68)]))
    assert (boxed[140, 100] != 255).any() and (boxed[140, 150] == 255).all()  # the edge, not the inside
    assert (boxed[120:160, 220:300] == 255).all()  # nothing outside the box and its caption
    outlined = np.asarray(
        draw_polygons(white, [LabelledPolygon(((20, 120), (120, 120), (120, 160), (20, 160)), "hi", 0.9)])
    )
    assert (outlined[140, 20] != 255).any() and (outlined[140, 70] == 255).all()
