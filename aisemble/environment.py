"""Checks of the Python environment that pip cannot make: exactly one ONNX Runtime, offline settings."""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

__all__ = ["OFFLINE_ENV", "apply_offline_defaults", "check_environment"]

#: Settings that keep transformers and ultralytics from reaching for the network.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "false",
    "TOKENIZERS_PARALLELISM": "false",
}
_ONNX_RUNTIMES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")


def apply_offline_defaults() -> None:
    """Set the offline variables unless the user set them."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check_environment() -> list[str]:
    """Problems found (empty when all is well)."""
    problems = []
    runtimes = {name: v for name in _ONNX_RUNTIMES if (v := _installed(name))}
    if list(runtimes) != ["onnxruntime-gpu"]:
        found = ", ".join(f"{k}=={v}" for k, v in runtimes.items()) or "none"
        problems.append(
            f"exactly one ONNX Runtime distribution, onnxruntime-gpu, must be installed (found: {found}); "
            "two distributions overwrite each other's files. Fix: pip uninstall -y onnxruntime && "
            "pip install --force-reinstall --no-deps onnxruntime-gpu==1.31.1"
        )
    if _installed("opencv-python") and _installed("opencv-python-headless"):
        problems.append("opencv-python and opencv-python-headless are both installed; keep opencv-python only")
    return problems


def main() -> int:
    """Print problems and exit non-zero if any."""
    problems = check_environment()
    for problem in problems:
        print(f"environment: {problem}", file=sys.stderr)
    if not problems:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        print(f"environment: ok (onnxruntime {onnxruntime.__version__}, providers {providers})")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
