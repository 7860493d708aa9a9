"""The state directory: where the mesh keeps what it makes at run time (models, keys, certificates, jobs)."""

from __future__ import annotations

import os
from pathlib import Path

from aisemble.config.schema import REPO_ROOT

__all__ = ["STATE_ENV", "state_dir"]

#: Environment variable naming the state directory (default: <repository root>/.aisemble, never tracked).
STATE_ENV = "AISEMBLE_STATE_DIR"


def state_dir() -> Path:
    """$AISEMBLE_STATE_DIR if set, else <repository root>/.aisemble; read on every call (tests move it)."""
    env = os.environ.get(STATE_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / ".aisemble"
