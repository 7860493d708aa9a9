"""ONNX Runtime sessions for the backends that run a graph, and their shared settings (threads, spinning)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aisemble.hosting.settings import ModelSettings, setting

__all__ = ["OnnxRuntimeSettings", "inference_session"]


@dataclass(frozen=True)
class OnnxRuntimeSettings(ModelSettings):
    """The registry params of every ONNX Runtime backend: `intra_op_threads` (0: ONNX Runtime's choice) and
    `intra_op_spinning` (true / false; not set: the backend's default, see `inference_session`)."""

    intra_op_threads: int = setting(0, minimum=0)
    intra_op_spinning: bool | None = setting(None)


def inference_session(
    path: Path | str, device: str, settings: OnnxRuntimeSettings, *, spinning: bool | None = None
) -> Any:
    """An InferenceSession with every graph optimisation, on the CPU (CUDA first for device: cuda).

    Spinning worker threads answer the next call sooner but take CPU from the event loop between calls:
    `settings.intra_op_spinning` decides, else `spinning` (None: ONNX Runtime's default, which spins)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if settings.intra_op_threads:
        options.intra_op_num_threads = settings.intra_op_threads
    allow = settings.intra_op_spinning if settings.intra_op_spinning is not None else spinning
    if allow is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow else "0")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)
