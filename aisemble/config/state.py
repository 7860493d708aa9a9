"""The state directory: where the mesh keeps what it makes at run time (models, keys, certificates, jobs)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from aisemble.config.schema import REPO_ROOT

__all__ = [
    "STATE_ENV",
    "fsync_directory",
    "fsync_tree",
    "replacing_atomically",
    "state_dir",
    "write_atomically",
    "write_bytes_atomically",
]

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
    if private:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with replacing_atomically(path) as handle:  # mkstemp makes the file 0600
        handle.write(text.encode("utf-8"))


def fsync_directory(path: Path) -> None:
    """Flush a folder's entries to disk: a file made, renamed or removed in it survives a power cut only then."""
    folder = os.open(path, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under root (root too), deepest first: before a finished folder is renamed
    into place, so that the name never points at files whose data is still only in memory."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        fsync_directory(Path(folder))


@contextlib.contextmanager
def replacing_atomically(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write whose bytes replace `path` when the block ends without an error, as
    write_atomically does: a temporary file in the same folder (0600), fsynced, renamed over `path`, the folder
    fsynced. An error in the block leaves `path` as it was and removes the temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write bytes so that a crash at any instant leaves the old file or the new one (replacing_atomically)."""
    with replacing_atomically(path) as handle:
        handle.write(data)
