"""First start of a mesh: the local admin and mesh keys, and the certificates, made when missing (idempotent)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from aisemble.config.state import state_dir
from aisemble.security.certs import MEMBERS, CertificateAuthority
from aisemble.security.keys import KeyFile, KeyRing, write_private

__all__ = ["credentials_dir", "ensure_certificates", "ensure_local_key"]


def credentials_dir() -> Path:
    """<state>/credentials: the local admin key (admin.key) and the mesh's own key (mesh.key), mode 0600."""
    return state_dir() / "credentials"


def ensure_local_key(role: str, keys: KeyFile | None = None, folder: Path | None = None) -> tuple[Path, bool]:
    """(<credentials>/<role>.key, whether it was made now): a key of `role` whose secret the file holds; a new
    one when the file is missing or its key was revoked or removed from the keys file."""
    keys = keys or KeyFile()
    path = (folder or credentials_dir()) / f"{role}.key"
    if path.is_file():
        record = KeyRing(keys).find(path.read_text(encoding="utf-8").strip())
        if record is not None and record.active and record.role == role:
            return path, False
    _record, secret = keys.create(role, name=f"local {role} (made on first start)")
    write_private(path, secret + "\n")
    return path, True


def ensure_certificates(folder: Path, hosts: Iterable[str] = (), rotate: bool = False) -> CertificateAuthority:
    """The mesh CA and every member's certificate in `folder` (new member certificates when rotate)."""
    authority = CertificateAuthority(folder)
    authority.ensure(MEMBERS, sorted(set(hosts)), rotate=rotate)
    return authority
