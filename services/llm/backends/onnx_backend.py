"""Text generation on ONNX Runtime: the exported graph with past key/values and our own decoding loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aisemble.errors import FailedPreconditionError
from aisemble.hosting.onnx_runtime import OnnxRuntimeSettings, inference_session
from aisemble.store.causal_lm_graph import KV_INPUT_NAMES, ONNX_FILE
from services.llm.backends.engine import DecoderEngine
from services.llm.backends.local import ContinuousBatchingSettings, LocalDecoderBackend

__all__ = ["OnnxLlmBackend", "OnnxLlmEngine", "OnnxLlmSettings"]


@dataclass(frozen=True)
class OnnxLlmSettings(ContinuousBatchingSettings, OnnxRuntimeSettings):
    """An ONNX Runtime text-generation model's params: its continuous batching and ONNX Runtime's threads."""


class OnnxLlmEngine(DecoderEngine):
    """A causal LM exported by `aisemble models prepare` (one graph for prefill and decode) in one
    InferenceSession; the cache is the list of present key/value arrays fed back as the next step's past.
    Greedy output is token-for-token the transformers engine's (the tests check it)."""

    def load(self, settings: OnnxLlmSettings) -> None:
        graph = self.path / ONNX_FILE
        if not graph.exists():
            raise FailedPreconditionError(f"{graph} is missing: run `aisemble models prepare {self.path.name}`")
        config = self.config
        self._layers = int(config["num_hidden_layers"])
        self._kv_heads = int(config["num_key_value_heads"])
        self._head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
        # Intra-op spinning on unless params.intra_op_spinning says otherwise: through the service on 2 cores it
        # gave 36.4 tokens/s vs 32.9 off for one stream (the bare loop: 36 vs 30), the same for 8 streams (146);
        # the spinning threads wait hot between steps, then sleep when the model is idle.
        self.session: Any = inference_session(graph, self.device, settings, spinning=True)
        self._past_names = KV_INPUT_NAMES(self._layers)
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _empty(self, rows: int) -> list[np.ndarray]:
        return [np.zeros((rows, self._kv_heads, 0, self._head_dim), dtype=np.float32)] * (2 * self._layers)

    def forward(self, input_ids: list[int], past: Any, past_length: int, adapter: int | None) -> tuple[np.ndarray, Any]:
        new = len(input_ids)
        feeds: dict[str, np.ndarray] = {
            "input_ids": np.asarray([input_ids], dtype=np.int64),
            "attention_mask": np.ones((1, past_length + new), dtype=np.int64),
            "position_ids": np.arange(past_length, past_length + new, dtype=np.int64)[None, :],
        }
        feeds.update(zip(self._past_names, self._empty(1) if past is None else past, strict=True))
        outputs = self.session.run(self._output_names, feeds)
        return outputs[0][0, -1], outputs[1:]

    def prefill(self, prompts: list[list[int]], adapters: list[int | None]) -> tuple[np.ndarray, Any]:
        input_ids, attention_mask, position_ids = self.left_padded(prompts)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        feeds.update(zip(self._past_names, self._empty(len(prompts)), strict=True))
        outputs = self.session.run(self._output_names, feeds)
        return outputs[0][:, -1], outputs[1:]

    def decode_batch(
        self,
        tokens: list[int],
        positions: list[int],
        attention_mask: np.ndarray,
        kv: Any,
        adapters: list[int | None],
    ) -> tuple[np.ndarray, Any]:
        feeds: dict[str, np.ndarray] = {
            "input_ids": np.asarray(tokens, dtype=np.int64)[:, None],
            "attention_mask": attention_mask,
            "position_ids": np.asarray(positions, dtype=np.int64)[:, None],
        }
        feeds.update(zip(self._past_names, kv, strict=True))
        outputs = self.session.run(self._output_names, feeds)
        return outputs[0][:, -1], outputs[1:]

    def kv_join(self, batch: Any | None, batch_length: int, arrivals: Any, arrivals_length: int) -> Any:
        if batch is None:
            return arrivals
        length = max(batch_length, arrivals_length)

        def pad(array: np.ndarray, have: int) -> np.ndarray:
            return np.pad(array, ((0, 0), (0, 0), (length - have, 0), (0, 0))) if have < length else array

        return [
            np.concatenate([pad(b, batch_length), pad(a, arrivals_length)])
            for b, a in zip(batch, arrivals, strict=True)
        ]

    def kv_select(self, kv: Any, rows: list[int], trim_left: int) -> Any:
        return [np.ascontiguousarray(array[rows, :, trim_left:]) for array in kv]

    def kv_copy(self, kv: Any, row: int, start: int, stop: int) -> Any:
        return [array[row : row + 1, :, start:stop].copy() for array in kv]

    def kv_bytes(self, kv: Any) -> int:
        return sum(int(array.nbytes) for array in kv)

    def close(self) -> None:
        super().close()
        self.session = None


class OnnxLlmBackend(LocalDecoderBackend):
    """A registry entry served by ONNX Runtime (provider: onnxruntime) on a shared OnnxLlmEngine."""

    provider = "onnxruntime"
    settings_class: ClassVar[type[OnnxLlmSettings]] = OnnxLlmSettings
    settings: OnnxLlmSettings
    engine_class = OnnxLlmEngine
