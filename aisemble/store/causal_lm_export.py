"""Export of a Hugging Face causal LM to one ONNX graph with past key/values (prefill and decode alike)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

__all__ = ["KV_INPUT_NAMES", "export_causal_lm"]

ONNX_FILE = "model.onnx"


def KV_INPUT_NAMES(num_layers: int) -> list[str]:
    """past_key_values.{i}.key / .value input names, in graph order."""
    return [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def export_causal_lm(hf_dir: Path, out_dir: Path, opset: int = 17) -> dict[str, Any]:
    """Write out_dir/model.onnx (+ model.onnx.data) and copy the tokenizer and config next to it.

    The graph takes input_ids, attention_mask, position_ids and each layer's past key/value
    ([batch, kv_heads, past, head_dim]; past may be 0 for prefill) and returns the logits of the
    last position only plus each layer's present key/value. Returns facts for the manifest.
    """
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    config = model.config
    layers = config.num_hidden_layers
    kv_heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    class WithPast(torch.nn.Module):
        """Calls the model with keyword arguments (positional calls break on transformers 5)."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> Any:
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layers)], config=config)
            out = self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    batch, new, past_len = 2, 3, 5  # no axis fixed at 0 or 1, so every axis stays dynamic
    # Left padding in the example mask makes the tracer keep the padding-mask path (a batch of sequences
    # of different lengths, as continuous batching runs it); an all-ones mask would trace it away.
    mask = torch.ones(batch, past_len + new, dtype=torch.long)
    mask[0, :2] = 0
    example = (
        torch.randint(0, config.vocab_size, (batch, new)),
        mask,
        torch.arange(past_len, past_len + new).repeat(batch, 1),
        *[torch.randn(batch, kv_heads, past_len, head_dim) for _ in range(2 * layers)],
    )
    past_names = KV_INPUT_NAMES(layers)
    present_names = [name.replace("past_key_values", "present") for name in past_names]
    dynamic_axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch"},
    }
    for name in past_names:
        dynamic_axes[name] = {0: "batch", 2: "past_sequence"}
    for name in present_names:
        dynamic_axes[name] = {0: "batch", 2: "total_sequence"}

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ONNX_FILE
    with torch.inference_mode():
        torch.onnx.export(
            WithPast(model),
            example,
            str(target),
            input_names=["input_ids", "attention_mask", "position_ids", *past_names],
            output_names=["logits", *present_names],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    _externalise(target)
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    ):
        if (hf_dir / name).exists():
            shutil.copy2(hf_dir / name, out_dir / name)
    return {
        "format": "onnx",
        "onnx_file": ONNX_FILE,
        "opset": opset,
        "num_layers": layers,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": config.vocab_size,
        "context_length": config.max_position_embeddings,
        "inputs": ["input_ids", "attention_mask", "position_ids", "past_key_values.{i}.key|value"],
        "outputs": ["logits (last position)", "present.{i}.key|value"],
        "exporter": f"torch.onnx legacy (torch {torch.__version__})",
        "source": json.loads((hf_dir / "config.json").read_text()).get("architectures", ["?"])[0],
    }


def _externalise(path: Path) -> None:
    """Move the weights into model.onnx.data (one file, loaded by ONNX Runtime beside the graph)."""
    import onnx

    model = onnx.load(str(path))
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
