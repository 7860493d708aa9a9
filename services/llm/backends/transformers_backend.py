"""Text generation with transformers (PyTorch) from the model store, with a KV cache and our decoding loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from services.llm.backends.local import LocalDecoderBackend

__all__ = ["TransformersBackend"]


class TransformersBackend(LocalDecoderBackend):
    """A Hugging Face causal LM (e.g. SmolLM2) in float32 on the CPU."""

    provider = "transformers"

    def _load_model(self, path: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self._torch = torch
        self.model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
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

    def cleanup(self) -> None:
        self.model = None
