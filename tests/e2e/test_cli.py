"""The `aisemble` commands for every RPC, run as a user runs them (a subprocess) against the session mesh."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aisemble.inputs.images import ImageLimits, decode_image
from tests.assets.pictures import bus_jpg, encode, render_document, render_line
from tests.e2e.conftest import REPO
from tests.integration.test_finetune_errors import DATASET


def _cli(
    folder: Path, *arguments: str, stdin: str | bytes | None = None, ok: bool = True
) -> subprocess.CompletedProcess:
    """`aisemble ARGUMENTS` against the session mesh (its config and state folders: its gateway and admin key)."""
    env = {**os.environ, "AISEMBLE_CONFIG_DIR": str(folder), "AISEMBLE_STATE_DIR": str(folder / "state")}
    ran = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *arguments],
        cwd=REPO,
        env=env,
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=180,
    )
    result = subprocess.CompletedProcess(
        ran.args, ran.returncode, ran.stdout.decode("utf-8"), ran.stderr.decode("utf-8", "replace")
    )
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _pixels(data: bytes) -> np.ndarray:
    return decode_image(data, ImageLimits()).rgb.astype(np.int16)


def test_embed_classify_and_language(mesh):
    folder = mesh[2]
    embedded = _json_lines(
        _cli(folder, "embed", "--model", "minilm-l6", "eating food", "-", "--json", stdin="x\n\n").stdout
    )
    assert len(embedded) == 1 and embedded[0]["dimensions"] == 384
    vectors = [np.array(e["values"]) for e in embedded[0]["embeddings"]]
    assert len(vectors) == 2 and all(abs(np.linalg.norm(v) - 1) < 1e-3 for v in vectors)
    table = _cli(folder, "embed", "--model", "minilm-l6", "eating food").stdout
    assert "vector (first 4 of 384)" in table and "eating food" in table

    labels = ["--label", "medical", "--label", "legal", "--label", "financial"]
    classified = _cli(folder, "classify", "--model", "minilm-l6", "The patient shows symptoms of fever", *labels)
    lines = classified.stdout.splitlines()
    assert lines[0].split() == ["#", "label", "score", "text"]
    assert lines[1].split()[:2] == ["0", "medical"] and "minilm-l6" in classified.stderr

    languages = _cli(
        folder, "language", "-", stdin="これは日本語の文です。\nBonjour tout le monde, comment allez-vous ?\n"
    )
    rows = languages.stdout.splitlines()[1:]
    assert [row.split()[1] for row in rows] == ["ja", "fr"]


def test_detect_annotates_every_box(mesh, tmp_path):
    folder = mesh[2]
    (tmp_path / "bus.jpg").write_bytes(bus_jpg())
    out = tmp_path / "bus-annotated.png"
    ran = _cli(folder, "detect", str(tmp_path / "bus.jpg"), "--model", "yolov8-fall", "--json", "--annotate", str(out))
    reply = json.loads(ran.stdout)
    assert reply["selection"]["model"] == "yolov8-fall" and len(reply["detections"]) >= 2
    before, after = _pixels(bus_jpg()), _pixels(out.read_bytes())
    assert after.shape == before.shape
    for detection in reply["detections"]:
        box = detection["box"]
        x0, y0 = int(box["x_min"]), int(box["y_min"])
        x1, y1 = int(np.ceil(box["x_max"])), int(np.ceil(box["y_max"]))
        changed = np.abs(after[y0 : y1 + 1, x0 : x1 + 1] - before[y0 : y1 + 1, x0 : x1 + 1]).sum(axis=2) > 60
        # The outline is drawn along the box's edges: its left and top edges changed over most of their length.
        assert changed[:, :3].any(axis=1).mean() > 0.8 and changed[:3, :].any(axis=0).mean() > 0.8, detection

    table = _cli(folder, "detect", "-", "--model", "yolov8-fall", stdin=bus_jpg())
    header, *rows = table.stdout.splitlines()[1:]
    assert header.split() == ["#", "class", "score", "x_min", "y_min", "x_max", "y_max"]
    assert len(rows) == len(reply["detections"]) and all(" Normal " in row or " Fall " in row for row in rows)
    assert "yolov8-fall" in table.stderr


def test_ocr_annotates_text_and_classify_image_reads_orientation(mesh, tmp_path):
    folder = mesh[2]
    picture = encode(render_line("Hello mesh"))
    (tmp_path / "line.png").write_bytes(picture)
    out = tmp_path / "line-annotated.png"
    reply = json.loads(_cli(folder, "ocr", str(tmp_path / "line.png"), "--json", "--annotate", str(out)).stdout)
    assert "Hello" in reply["full_text"] and reply["lines"]
    before, after = _pixels(picture), _pixels(out.read_bytes())
    for line in reply["lines"]:
        points = line["polygon"]
        x0, y0 = int(min(p["x"] for p in points)), int(min(p["y"] for p in points))
        x1, y1 = int(max(p["x"] for p in points)) + 1, int(max(p["y"] for p in points)) + 1
        assert (np.abs(after[y0:y1, x0:x1] - before[y0:y1, x0:x1]).sum(axis=2) > 60).any()
    table = _cli(folder, "ocr", "-", stdin=picture).stdout
    assert "Hello" in table and table.splitlines()[1].split() == ["#", "score", "box", "text"]

    page = render_document().rotate(90, expand=True)
    oriented = _cli(folder, "classify-image", "-", "--model", "doc-orientation", "--top-k", "2", stdin=encode(page))
    header, first, _second = oriented.stdout.splitlines()
    assert header.split() == ["label", "score"] and first.split()[0] == "270"


def test_stream_detect_reads_a_video_and_a_folder(mesh, tmp_path):
    import cv2

    folder = mesh[2]
    frame = cv2.imdecode(np.frombuffer(bus_jpg(), np.uint8), cv2.IMREAD_COLOR)
    frame = cv2.resize(frame, (405, 540))
    video = tmp_path / "bus.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (405, 540))
    for shift in range(3):
        writer.write(np.roll(frame, shift * 8, axis=1))
    writer.release()
    ran = _cli(folder, "stream-detect", str(video), "--model", "yolov8-fall", "--json")
    replies = _json_lines(ran.stdout)
    assert [int(r["frame_index"]) for r in replies] == [0, 1, 2]
    assert all(r["detections"] and not r["dropped"] for r in replies)
    assert "3/3" in ran.stderr and "3 frames (0 dropped)" in ran.stderr  # tqdm's bar, then the summary

    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(2):
        (frames / f"{index:03}.jpg").write_bytes(bus_jpg())
    (frames / "notes.txt").write_text("not a frame")
    shown = _cli(folder, "stream-detect", str(frames), "--model", "yolov8-fall", "--no-progress")
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("frame     0  ") and "detections: Normal" in lines[0]


def test_analyze_and_ensemble(mesh, tmp_path):
    folder = mesh[2]
    analysis = _cli(folder, "analyze", "-", "People standing next to a bus", stdin=bus_jpg())
    assert "detection (" in analysis.stdout and "language (" in analysis.stdout and "mentions:" in analysis.stdout
    reply = json.loads(_cli(folder, "analyze", "-", "A bus", "--json", stdin=bus_jpg()).stdout)
    assert reply["detection"]["detections"] and reply["text_analysis"]["embedding"]["dimensions"] == 384

    members = ["--member", "minilm-l6", "--member", "minilm-l6-int8:0.5"]
    labels = ["--label", "medical", "--label", "financial"]
    combined = _cli(folder, "ensemble", "classify", "The patient has a fever", *members, *labels)
    assert "probability_average" in combined.stdout and " medical " in combined.stdout
    reply = json.loads(_cli(folder, "ensemble", "classify", "Stocks fell", *members, *labels, "--json").stdout)
    assert [m["model"] for m in reply["member_results"]] == ["minilm-l6", "minilm-l6-int8"]
    assert reply["member_results"][1]["weight"] == 0.5
    assert reply["classification"]["results"][0]["labels"][0]["label"] == "financial"


def test_models_list_show_register_deregister(mesh, tmp_path):
    folder = mesh[2]
    listed = _cli(folder, "models", "list", "--task", "object-detection").stdout.splitlines()
    assert listed[0].split()[:5] == ["model", "task", "provider", "service", "health"]
    assert {row.split()[0] for row in listed[1:]} >= {"yolov8-fall", "yolov8-fall-ultralytics", "nudenet"}
    assert all(row.split()[1] == "object-detection" for row in listed[1:])
    shown = json.loads(_cli(folder, "models", "show", "minilm-l6", "--json").stdout)
    assert shown["model_path"] == "minilm-l6" and shown["health"] == "MODEL_HEALTH_SERVING"

    entry = tmp_path / "entry.yaml"
    entry.write_text(
        "name: cli-minilm\ntask: embedding\nprovider: onnxruntime\nmodel_path: minilm-l6\n"
        "params: {onnx_file: model.onnx}\ndescription: registered by the CLI test\n"
    )
    registered = _cli(folder, "models", "register", str(entry), "--tag", "cli", "--language", "en")
    assert "cli-minilm: registered, embedding on onnxruntime, service nlp" in registered.stdout
    again = _cli(folder, "models", "register", str(entry), ok=False)
    assert again.returncode == 1 and again.stderr.startswith("error: ALREADY_EXISTS: ")
    detail = _cli(folder, "models", "show", "cli-minilm").stdout
    assert "registered by the CLI test" in detail and "onnx_file" in detail and " cli" in detail
    bad = _cli(folder, "models", "register", "--name", "cli-bad", "--task", "embedding", "--provider", "nope", ok=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: INVALID_ARGUMENT: ") and "provider" in bad.stderr

    refused = _cli(folder, "models", "deregister", "cli-minilm", ok=False, stdin="")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert "cli-minilm: deregistered" in _cli(folder, "models", "deregister", "cli-minilm", "--yes").stdout
    gone = _cli(folder, "models", "show", "cli-minilm", ok=False)
    assert gone.returncode == 1 and gone.stderr.startswith("error: NOT_FOUND: ") and len(gone.stderr.splitlines()) == 1


def test_finetune_plot_draws_the_losses(mesh, tmp_path):
    folder = mesh[2]
    small = tmp_path / "small.jsonl"
    small.write_text("".join(DATASET.read_text(encoding="utf-8").splitlines(keepends=True)[:60]), encoding="utf-8")
    settings = ["--epochs", "2", "--unfrozen-layers", "0", "--validation-split", "0.2", "--batch-size", "8"]
    try:
        created = _cli(
            folder,
            *("finetune", "create", "--base", "minilm-l6", "--task", "text-classification", "--file", str(small)),
            *("--name", "cli-plot-classifier", *settings, "--watch"),
        )
        job_id = created.stdout.split()[0]
        plot = tmp_path / "loss.png"
        drawn = _cli(folder, "finetune", "plot", job_id, "-o", str(plot))
        counts = re.search(r"(\d+) training and (\d+) validation points, steps 1-(\d+), job SUCCEEDED", drawn.stdout)
        assert counts and int(counts[1]) >= 2 and int(counts[2]) == 2, drawn.stdout
        with Image.open(io.BytesIO(plot.read_bytes())) as image:
            assert image.format == "PNG" and image.size == (800, 450)
            pixels = np.asarray(image.convert("RGB"))
        # Not a blank canvas: the training curve (matplotlib's tab:blue) and the validation points (tab:orange).
        for colour in ((31, 119, 180), (255, 127, 14)):
            assert (pixels == colour).all(axis=-1).sum() > 50, colour
        missing = _cli(folder, "finetune", "plot", "ftjob-nope", "-o", str(tmp_path / "x.png"), ok=False)
        assert missing.returncode == 1 and missing.stderr.startswith("error: ")
    finally:
        _cli(folder, "models", "deregister", "cli-plot-classifier", "--yes", ok=False)
        # The job stored its result in the mesh's model store: take it out again, as the test found the store.
        store = Path(os.environ.get("AISEMBLE_MODEL_STORE") or folder / "state" / "models")
        shutil.rmtree(store / "cli-plot-classifier", ignore_errors=True)


def test_status_columns_fit_the_longest_name(mesh):
    lines = _cli(mesh[2], "status").stdout.splitlines()
    header, rows = lines[1], lines[2:]
    rows = rows[: next((i for i, row in enumerate(rows) if not row.strip()), len(rows))]  # the processes follow
    assert any(row.startswith("yolov8-fall-ultralytics ") for row in rows)
    task_at = header.index("task")
    for row in rows:
        name, rest = row[:task_at], row[task_at:]
        assert name.endswith("  ") and not rest.startswith(" "), row


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("detect", "no-such.jpg"), "error: no image file at no-such.jpg"),
        (("embed", "--model", "no-such-model", "hi"), "error: NOT_FOUND: "),
        (("classify-image", "-", "--model", "minilm-l6"), "error: no image on stdin"),
        (("stream-detect", "no-such-folder"), "error: no folder or video file at no-such-folder"),
    ],
)
def test_errors_are_one_line(mesh, arguments, message):
    ran = _cli(mesh[2], *arguments, ok=False, stdin=b"")
    assert ran.returncode == 1 and ran.stderr.startswith(message) and len(ran.stderr.strip().splitlines()) == 1
