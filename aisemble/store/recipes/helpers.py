"""Helpers the recipes share: offline and quiet transformers, and a light summary of an ONNX file."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["onnx_summary", "quiet_transformers"]


@contextlib.contextmanager
def quiet_transformers(progress: bool) -> Iterator[None]:
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


def onnx_summary(path: Path) -> dict[str, Any]:
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
