"""The `aisemble` command: prepare models, run one service or the whole mesh, and call the services."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aisemble.environment import apply_offline_defaults

__all__ = ["main"]


def _keys(args: argparse.Namespace) -> int:
    from entrypoints.security_cli import run_keys

    return run_keys(args)


def _certs(args: argparse.Namespace) -> int:
    from entrypoints.security_cli import run_certs

    return run_certs(args)


def _finetune(args: argparse.Namespace) -> int:
    from entrypoints.commands.gateway import default_target, gateway_peer
    from services.finetune.client import run

    return run(args, args.address or default_target(), peer=gateway_peer())


def _parser() -> argparse.ArgumentParser:
    from entrypoints.commands import composition, generation, mesh, nlp, registry, store, vision
    from entrypoints.security_cli import add_parsers as add_security_parsers
    from services.finetune.client import add_parsers as add_finetune_parsers

    parser = argparse.ArgumentParser(prog="aisemble", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser(
        "models", help="the local model store (prepare, status, import) and the registry (list, show, register...)"
    ).add_subparsers(dest="action", required=True)
    store.add_parsers(models)
    registry.add_parsers(models)
    mesh.add_parsers(sub)
    generation.add_parsers(sub)
    nlp.add_parsers(sub)
    vision.add_parsers(sub)
    composition.add_parsers(sub)
    mesh.add_status_parsers(sub)

    finetune = sub.add_parser("finetune", help="fine-tuning jobs: create (--watch: live progress), upload, list...")
    add_finetune_parsers(finetune.add_subparsers(dest="action", required=True))
    finetune.set_defaults(handler=_finetune)

    add_security_parsers(sub)
    sub.choices["keys"].set_defaults(handler=_keys)
    sub.choices["certs"].set_defaults(handler=_certs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `aisemble` console script."""
    apply_offline_defaults()
    args = _parser().parse_args(argv)
    from aisemble.rpc.logs import configure_logging

    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        import grpc

        from aisemble.errors import AisembleError

        if isinstance(exc, grpc.RpcError) and not args.verbose:
            from entrypoints.commands.gateway import print_rpc_error

            return print_rpc_error(exc)
        if args.verbose or not isinstance(exc, AisembleError | OSError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
