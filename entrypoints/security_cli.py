"""`aisemble keys` (create, list, revoke API keys) and `aisemble certs` (the mesh CA and certificates)."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

__all__ = ["add_parsers", "run_certs", "run_keys"]


def _limit(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `keys` and `certs` sub-commands."""
    keys = sub.add_parser("keys", help="API keys: create (shown once), list with usage, revoke")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new key; its secret is printed once and stored only as a hash")
    create.add_argument(
        "--role",
        choices=["admin", "user", "mesh"],
        default="user",
        help="admin: everything; user: calls; mesh: the mesh's own processes (e.g. a Kubernetes Secret's mesh.key)",
    )
    create.add_argument("--name", default="", help="a label (who or what uses the key)")
    create.add_argument("--models", action="append", help="models the key may call (repeatable; default: all)")
    create.add_argument("--rpm", type=_limit, help="requests per minute (the quota window of mesh.yaml)")
    create.add_argument("--tpm", type=_limit, help="output tokens per minute")
    create.add_argument("--max-concurrent", type=_limit, help="calls in flight at once")
    actions.add_parser("list", help="every key (never its secret) with its quotas and usage")
    revoke = actions.add_parser("revoke", help="revoke a key (the gateway refuses it within a second)")
    revoke.add_argument("key_id", help="the key's id (the 8 characters after 'ais_')")

    certs = sub.add_parser("certs", help="make the mesh CA and one certificate per service (when missing)")
    certs.add_argument("--host", action="append", default=[], help="another host name or IP the certificates name")
    certs.add_argument("--rotate", action="store_true", help="issue new certificates for every member (same CA)")
    certs.add_argument("--new-ca", action="store_true", help="a new CA too (every member gets a new certificate)")


def _models(models: tuple[str, ...]) -> str:
    return ",".join(models) if models else "all"


def _quota(value: int | None) -> str:
    return "-" if value is None else str(value)


def run_keys(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run one `aisemble keys` action on the keys file of the state directory."""
    from aisemble.security.keys import KeyFile
    from aisemble.security.quotas import total_usage

    keys = KeyFile()
    if args.action == "create":
        record, secret = keys.create(
            args.role,
            name=args.name,
            models=args.models or (),
            rpm=args.rpm,
            tpm=args.tpm,
            max_concurrent=args.max_concurrent,
        )
        print(secret, file=out)
        print(
            f"key {record.key_id} (role {record.role}, models {_models(record.models)}): keep the line above, it is "
            "not shown again; send it as `authorization: Bearer <key>` (the CLI reads $AISEMBLE_API_KEY)",
            file=sys.stderr,
        )
        return 0
    if args.action == "revoke":
        record = keys.revoke(args.key_id)
        print(f"key {record.key_id} revoked at {record.revoked_at}", file=out)
        return 0
    usage = total_usage()
    header = f"{'key':<9} {'role':<6} {'name':<24} {'models':<20} {'rpm':>5} {'tpm':>7} {'conc':>4}"
    print(header + f" {'state':<8} {'requests':>8} {'tokens':>8} {'cost':>10} {'refused':>7}", file=out)
    for record in keys.read().values():
        used = usage.get(record.key_id)
        state = "active" if record.active else "revoked"
        print(
            f"{record.key_id:<9} {record.role:<6} {record.name[:24]:<24} {_models(record.models)[:20]:<20} "
            f"{_quota(record.rpm):>5} {_quota(record.tpm):>7} {_quota(record.max_concurrent):>4} {state:<8} "
            f"{used.requests if used else 0:>8} {used.output_tokens if used else 0:>8} "
            f"{used.cost if used else 0.0:>10.6f} {used.rejected if used else 0:>7}",
            file=out,
        )
    print(f"keys file: {keys.path}", file=out)
    return 0


def run_certs(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Make (or rotate) the mesh's certificates in security.certs_dir (default <state>/certs)."""
    from aisemble.config.mesh import load_mesh
    from aisemble.security.bootstrap import ensure_certificates
    from aisemble.security.certs import MEMBERS, CertificateAuthority
    from entrypoints.launcher import mesh_hosts

    mesh = load_mesh()
    folder = mesh.security.certificates()
    if args.new_ca:
        CertificateAuthority(folder).create(force=True)
    authority = ensure_certificates(folder, [*mesh_hosts(mesh), *args.host], rotate=args.rotate)
    for name in MEMBERS:
        print(f"{name:<11} {folder / (name + '.pem')}", file=out)
    print(
        f"CA: {authority.ca_file} (services trust only certificates it signed; restart the mesh to use new ones)",
        file=out,
    )
    return 0
