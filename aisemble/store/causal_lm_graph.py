"""Interface of the exported causal-LM ONNX graph: its file name and past key/value input names (recipe and backend)."""

from __future__ import annotations

__all__ = ["KV_INPUT_NAMES", "ONNX_FILE"]

#: File of the graph inside the artifact (its weights are in ONNX_FILE + ".data" beside it).
ONNX_FILE = "model.onnx"


def KV_INPUT_NAMES(num_layers: int) -> list[str]:
    """past_key_values.{i}.key / .value input names, in graph order."""
    return [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
