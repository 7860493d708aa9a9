"""File helpers of the model store: walking, copying and hashing folders, with byte progress bars."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from tqdm import tqdm

__all__ = ["copy_file", "human_size", "progress_bar", "sha256_file", "walk_files"]

_CHUNK = 4 * 1024 * 1024
_BIG_FILE = 16 * 1024 * 1024  # smaller files get no progress bar of their own


def walk_files(folder: Path, hidden: bool = True) -> list[Path]:
    """Every file under a folder, sorted; with hidden=False none inside a hidden folder or itself hidden."""
    files = (p for p in folder.rglob("*") if p.is_file())
    if not hidden:
        files = (p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return sorted(files)


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    """A byte progress bar that disappears when done (shown only when enabled)."""
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False, disable=not enabled)


def copy_file(src: Path, dst: Path, progress: bool = False) -> None:
    """Copy one file (creating folders), with a byte progress bar when asked and the file is large."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    size = src.stat().st_size
    show = progress and size >= _BIG_FILE
    with src.open("rb") as fin, dst.open("wb") as fout, progress_bar(size, f"copy {src.name}", show) as bar:
        while chunk := fin.read(_CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))
    shutil.copystat(src, dst)


def sha256_file(path: Path, bar: tqdm | None = None) -> str:
    """Hex sha256 of a file, advancing a byte progress bar as it reads."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return digest.hexdigest()


def human_size(size: int) -> str:
    """A size in B, KB, MB or GB (powers of 1000) for logs and status lines."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover
