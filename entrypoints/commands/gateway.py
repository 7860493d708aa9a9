"""How every calling command reaches the gateway: its address, TLS and API key, the shared flags, failed calls."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "add_gateway_arguments",
    "call_gateway",
    "default_target",
    "gateway_channel",
    "gateway_peer",
    "print_rpc_error",
]


def default_target() -> str:
    """The first gateway of configs/mesh.yaml (or $AISEMBLE_CONFIG_DIR's)."""
    from aisemble.config.mesh import load_mesh

    return load_mesh().gateway.addresses[0]


def gateway_peer() -> Any:
    """How the CLI reaches the gateway: its TLS when configured, and the API key ($AISEMBLE_API_KEY, else
    $AISEMBLE_API_KEY_FILE, else the local admin key in <state>/credentials/admin.key)."""
    from aisemble.config.mesh import load_mesh
    from aisemble.rpc.client import api_key
    from aisemble.rpc.tls import gateway_peer as peer_for

    return peer_for(load_mesh().security, "cli", api_key("admin.key"))


def add_gateway_arguments(parser: argparse.ArgumentParser, timeout: float) -> None:
    """--address and --timeout, as every command that calls the gateway takes them."""
    parser.add_argument("--address", help="host:port (default: the gateway from configs/mesh.yaml)")
    parser.add_argument("--timeout", type=float, default=timeout, help=f"deadline in seconds (default {timeout:g})")


@contextmanager
def gateway_channel(args: argparse.Namespace) -> Iterator[Any]:
    """A blocking channel to --address (default: the mesh's first gateway) with the mesh's TLS and key."""
    from aisemble.rpc.client import blocking_channel

    with blocking_channel(args.address or default_target(), peer=gateway_peer()) as channel:
        yield channel


def print_rpc_error(exc: Exception) -> int:
    """A failed call as one line on stderr (`error: CODE: details`); returns the exit status 1."""
    import grpc

    if not isinstance(exc, grpc.RpcError):
        raise exc
    print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
    return 1


def call_gateway(args: argparse.Namespace, stub_class: Any, method: str, request: Any) -> Any:
    """One unary call through the gateway (stub_class(channel).<method>(request), deadline --timeout); a failed call
    exits with its one-line message and status 1."""
    import grpc

    with gateway_channel(args) as channel:
        try:
            return getattr(stub_class(channel), method)(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            raise SystemExit(print_rpc_error(exc)) from None
