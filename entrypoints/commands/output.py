"""What calling commands print: tables whose columns fit their content, responses as JSON lines, the selection."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Iterable, Sequence
from typing import Any, TextIO

__all__ = ["clip", "json_line", "print_json", "print_selection", "print_table", "table_lines"]


def table_lines(headers: Sequence[str], rows: Iterable[Sequence[object]], right: Collection[str] = ()) -> list[str]:
    """The table as lines: each column as wide as its widest cell, the columns named in `right` aligned right
    (numbers), two spaces between columns, no trailing blanks."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    flush_right = [header in right for header in headers]
    lines = []
    for row in [list(headers), *cells]:
        parts = [cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, flush_right, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return lines


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], right: Collection[str] = (), out: TextIO | None = None
) -> None:
    """Print table_lines(...) to out (default stdout)."""
    for line in table_lines(headers, rows, right):
        print(line, file=out or sys.stdout)


def json_line(message: Any) -> str:
    """A protobuf message as one line of JSON: proto field names, every field even at its default, UTF-8 kept."""
    from google.protobuf import json_format

    document = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(document, ensure_ascii=False)


def print_json(message: Any, out: TextIO | None = None) -> None:
    """Print json_line(message) to out (default stdout)."""
    print(json_line(message), file=out or sys.stdout, flush=True)


def print_selection(asked: str, selection: Any) -> None:
    """Which model served the call and why, on stderr: `[auto -> minilm-l6: reason]`."""
    served = selection.model or asked
    reason = f": {selection.reason}" if selection.reason else ""
    print(f"[{asked or 'auto'} -> {served}{reason}]", file=sys.stderr)


def clip(text: str, width: int = 48) -> str:
    """One line of at most `width` characters (newlines shown as spaces, an ellipsis when cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
