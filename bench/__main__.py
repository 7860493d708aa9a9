"""`make bench`: run each area's benchmark (ours vs the bare model, side by side) and print its table."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from aisemble.environment import apply_offline_defaults

AREAS = (
    "llm",
    "batching",
    "structured",
    "nlp",
    "nlp_stream",
    "vision",
    "gateway",
    "tracing",
    "openai_facade",
    "kserve",
)


def main() -> int:
    """Run the named benchmarks (default: every one that exists), one after the other."""
    apply_offline_defaults()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("areas", nargs="*", help=f"which benchmarks, among {', '.join(AREAS)} (default: all)")
    args = parser.parse_args()
    failed = 0
    for area in args.areas or AREAS:
        if importlib.util.find_spec(f"bench.{area}") is None:
            print(f"== {area}: no benchmark yet", flush=True)
            continue
        print(f"\n== {area} ==", flush=True)
        try:
            importlib.import_module(f"bench.{area}").main()
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            failed += 1
            print(f"{area} benchmark failed: {exc!r}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
