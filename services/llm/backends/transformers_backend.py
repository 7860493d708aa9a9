"""Text generation with transformers (PyTorch) from the model store, with a KV cache and our decoding loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aisemble.errors import FailedPreconditionError
from aisemble.hosting.settings import setting
from services.llm.backends.local import ContinuousBatchingSettings, LocalDecoderBackend

__all__ = ["TransformersBackend", "TransformersSettings"]


def _not_empty(name: str) -> str | None:
    return None if name.strip() else "must name the base artifact (got an empty string)"


@dataclass(frozen=True)
class TransformersSettings(ContinuousBatchingSettings):
    """A transformers model's params: its continuous batching and, for a LoRA adapter, `base_model_path`."""

    base_model_path: str | None = setting(None, check=_not_empty)


class TransformersBackend(LocalDecoderBackend):
    """A Hugging Face causal LM (e.g. SmolLM2) in float32 on the CPU.

    A LoRA adapter is served on its base: an artifact folder with `adapter_config.json` and
    `adapter_model.safetensors` (peft) plus the base's config and tokenizer files; the base is the
    store artifact named by `params.base_model_path`. The adapter is merged into the base weights
    at load time, so serving it costs the same as serving the base.
    """

    provider = "transformers"
    settings_class: ClassVar[type[TransformersSettings]] = TransformersSettings
    settings: TransformersSettings

    def _load_model(self, path: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self._torch = torch
        if (path / "adapter_config.json").exists():
            from peft import PeftModel

            base_name = self.settings.base_model_path
            if not base_name or self.store is None:
                raise FailedPreconditionError(
                    f"model '{self.spec.name}' is a LoRA adapter: params.base_model_path must name the base artifact"
                )
            base = AutoModelForCausalLM.from_pretrained(self.store.require(base_name), dtype=torch.float32)
            self.model: Any = PeftModel.from_pretrained(base, path).merge_and_unload()
        else:
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        self.model.eval()

    def _forward(self, input_ids: list[int], past: Any) -> tuple[np.ndarray, Any]:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([input_ids], dtype=torch.long),
                past_key_values=past,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[0, -1].float().numpy(), out.past_key_values

    def _prefill(self, input_ids: list[int]) -> tuple[np.ndarray, Any]:
        return self._forward(input_ids, None)

    def _decode(self, token_id: int, state: Any) -> tuple[np.ndarray, Any]:
        return self._forward([token_id], state)

    # --- continuous batching (see services/llm/scheduler.py); the cache is a transformers DynamicCache ---
    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, Any]:
        torch = self._torch
        input_ids, attention_mask, position_ids = self._left_padded(prompts)
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(input_ids),
                # Nothing padded (one prompt, or equal lengths): let the model take its causal fast path.
                attention_mask=None if attention_mask.all() else torch.from_numpy(attention_mask),
                position_ids=torch.from_numpy(position_ids),
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1].float().numpy(), out.past_key_values

    def extend(self, input_ids: list[int], kv: Any | None, past_length: int) -> tuple[np.ndarray, Any]:
        return self._forward(input_ids, kv)  # the cache knows its length (past_length)

    def decode_batch(
        self, tokens: list[int], positions: list[int], attention_mask: np.ndarray, kv: Any
    ) -> tuple[np.ndarray, Any]:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([[t] for t in tokens], dtype=torch.long),
                attention_mask=None if attention_mask.all() else torch.from_numpy(attention_mask),
                position_ids=torch.tensor([[p] for p in positions], dtype=torch.long),
                past_key_values=kv,  # appended to in place
                use_cache=True,
            )
        return out.logits[:, -1].float().numpy(), out.past_key_values

    def kv_join(self, batch: Any | None, batch_length: int, arrivals: Any, arrivals_length: int) -> Any:
        if batch is None:
            return arrivals
        torch = self._torch
        length = max(batch_length, arrivals_length)

        def pad(tensor: Any, have: int) -> Any:
            return torch.nn.functional.pad(tensor, (0, 0, length - have, 0)) if have < length else tensor

        for mine, theirs in zip(batch.layers, arrivals.layers, strict=True):
            mine.keys = torch.cat([pad(mine.keys, batch_length), pad(theirs.keys, arrivals_length)])
            mine.values = torch.cat([pad(mine.values, batch_length), pad(theirs.values, arrivals_length)])
        return batch

    def kv_select(self, kv: Any, rows: list[int], trim_left: int) -> Any:
        index = self._torch.tensor(rows, dtype=self._torch.long)
        for layer in kv.layers:
            layer.keys = layer.keys[index, :, trim_left:]
            layer.values = layer.values[index, :, trim_left:]
        return kv

    def cleanup(self) -> None:
        super().cleanup()
        self.model = None
