"""Text generation with transformers (PyTorch) from the model store, with a KV cache and our decoding loop."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aisemble.hosting.settings import setting
from services.llm.backends.engine import DecoderEngine
from services.llm.backends.local import ContinuousBatchingSettings, LocalDecoderBackend

__all__ = ["TransformersBackend", "TransformersEngine", "TransformersSettings"]


def _not_empty(name: str) -> str | None:
    return None if name.strip() else "must name the base artifact (got an empty string)"


def compute_threads(setting_value: int) -> int:
    """PyTorch threads per forward pass: the setting, or (0) every core but one, which stays with the event loop
    and gRPC. Measured on 2 cores: on a decoding thread, 1 thread is as fast as 2 at batch 1 and faster at batch
    6 (0.76x the step time), and much faster with LoRA adapters (0.6x): their many small operations pay
    OpenMP's synchronisation on every call."""
    return setting_value or max(1, (os.cpu_count() or 1) - 1)


@dataclass(frozen=True)
class TransformersSettings(ContinuousBatchingSettings):
    """A transformers model's params: its continuous batching, `intra_op_threads` (0: every core but one) and,
    for a LoRA adapter, `base_model_path`."""

    base_model_path: str | None = setting(None, check=_not_empty)
    intra_op_threads: int = setting(0, minimum=0)


class TransformersEngine(DecoderEngine):
    """A Hugging Face causal LM (e.g. SmolLM2) in float32 on the CPU; the cache is a transformers DynamicCache.

    LoRA adapters (peft folders) are served unmerged on the shared weights: each adapter's low-rank
    matrices are applied to the rows that use it (services/llm/backends/lora.py), so an adapter costs its
    own size and sequences of the base and of several adapters decode in one batch.
    """

    serves_adapters = True

    def load(self, settings: TransformersSettings) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from services.llm.backends.lora import LoraSet

        self._torch = torch
        self._threads = compute_threads(settings.intra_op_threads)
        self.prepare_thread()  # the loading thread runs the warm-up
        self.model: Any = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).eval()
        self.lora = LoraSet(self.model)

    def prepare_thread(self) -> None:
        self._torch.set_num_threads(self._threads)

    def add_adapter(self, path: Path) -> int:
        return self.lora.add(path)

    def remove_adapter(self, adapter: int) -> None:
        self.lora.remove(adapter)

    def forward(self, input_ids: list[int], past: Any, past_length: int, adapter: int | None) -> tuple[np.ndarray, Any]:
        torch = self._torch
        with torch.inference_mode(), self.lora.rows([adapter]):
            out = self.model(
                input_ids=torch.tensor([input_ids], dtype=torch.long),
                past_key_values=past,  # knows its length (past_length)
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[0, -1].float().numpy(), out.past_key_values

    def prefill(self, prompts: list[list[int]], adapters: list[int | None]) -> tuple[np.ndarray, Any]:
        torch = self._torch
        input_ids, attention_mask, position_ids = self.left_padded(prompts)
        with torch.inference_mode(), self.lora.rows(adapters):
            out = self.model(
                input_ids=torch.from_numpy(input_ids),
                # Nothing padded (one prompt, or equal lengths): let the model take its causal fast path.
                attention_mask=None if attention_mask.all() else torch.from_numpy(attention_mask),
                position_ids=torch.from_numpy(position_ids),
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1].float().numpy(), out.past_key_values

    def decode_batch(
        self,
        tokens: list[int],
        positions: list[int],
        attention_mask: np.ndarray,
        kv: Any,
        adapters: list[int | None],
    ) -> tuple[np.ndarray, Any]:
        torch = self._torch
        with torch.inference_mode(), self.lora.rows(adapters):
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

    def kv_copy(self, kv: Any, row: int, start: int, stop: int) -> Any:
        from transformers import DynamicCache

        # DynamicCache's update concatenates into new tensors: the copy shares nothing with `kv`.
        cut = (slice(row, row + 1), slice(None), slice(start, stop))
        return DynamicCache([(layer.keys[cut], layer.values[cut]) for layer in kv.layers])

    def kv_bytes(self, kv: Any) -> int:
        return sum(
            int(layer.keys.nelement() * layer.keys.element_size() * 2) for layer in kv.layers if layer.is_initialized
        )

    def close(self) -> None:
        super().close()
        self.model = None


class TransformersBackend(LocalDecoderBackend):
    """A registry entry served by transformers (provider: transformers) on a shared TransformersEngine.

    A LoRA adapter is an artifact folder with `adapter_config.json` and `adapter_model.safetensors` (peft)
    plus the base's config and tokenizer files; the base is the store artifact named by
    `params.base_model_path`, loaded once however many adapters and entries name it.
    """

    provider = "transformers"
    settings_class: ClassVar[type[TransformersSettings]] = TransformersSettings
    settings: TransformersSettings
    engine_class = TransformersEngine
