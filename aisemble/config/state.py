"""The state directory: where the mesh keeps what it makes at run time (models, keys, certificates, jobs)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from aisemble.config.schema import REPO_ROOT

__all__ = ["STATE_ENV", "state_dir", "write_atomically"]

#: Environment variable naming the state directory (default: <repository root>/.aisemble, never tracked).
STATE_ENV = "AISEMBLE_STATE_DIR"


def state_dir() -> Path:
    """$AISEMBLE_STATE_DIR if set, else <repository root>/.aisemble; read on every call (tests move it)."""
    env = os.environ.get(STATE_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / ".aisemble"


def write_atomically(path: Path, text: str, private: bool = False) -> None:
    """Write a file so that a crash at any instant leaves the old or the new one, never a mix: a temporary file
    in the same folder, fsynced, renamed over the old one, the folder fsynced. The file is its owner's only
    (0600); private: its folder too (0700, made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True, **({"mode": 0o700} if private else {}))
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
