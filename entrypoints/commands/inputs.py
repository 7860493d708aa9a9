"""What calling commands read: texts from arguments or stdin (`-`, one per line), images from a path or stdin."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["read_image", "read_texts"]


def read_texts(values: Sequence[str]) -> list[str]:
    """The texts the arguments give; `-` stands for stdin's non-empty lines. Exits with a message when none."""
    texts: list[str] = []
    for value in values:
        if value == "-":
            texts.extend(line.rstrip("\r\n") for line in sys.stdin if line.strip())
        else:
            texts.append(value)
    if not texts:
        raise SystemExit("error: no texts: give them as arguments, or `-` and one per line on stdin")
    return texts


def read_image(source: str) -> bytes:
    """An encoded image file's bytes: from the path, or from stdin for `-`. Exits with a message when unreadable."""
    if source == "-":
        data = sys.stdin.buffer.read()
        if not data:
            raise SystemExit("error: no image on stdin (pipe an image file into `-`)")
        return data
    path = Path(source).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SystemExit(f"error: no image file at {source}") from None
    except IsADirectoryError:
        raise SystemExit(f"error: {source} is a folder, not an image file") from None
    except OSError as exc:
        raise SystemExit(f"error: cannot read {source}: {exc.strerror}") from None
