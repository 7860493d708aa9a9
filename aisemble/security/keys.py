"""API keys: random secrets shown once, kept only as sha256 digests in the keys file of the state directory."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aisemble.config.state import state_dir, write_atomically
from aisemble.errors import InvalidArgumentError, NotFoundError

__all__ = [
    "ROLES",
    "ApiKey",
    "KeyFile",
    "KeyRing",
    "default_keys_path",
    "key_id_of",
    "write_private",
]

#: admin: everything; user: inference and reads (of its models, when the key names some); mesh: the mesh's own
#: processes (registry reads with configuration, registering fine-tuned models, calls on behalf of a caller).
ROLES = ("admin", "user", "mesh")
_PREFIX = "ais"


def default_keys_path() -> Path:
    """$AISEMBLE_KEYS_FILE (e.g. a mounted Kubernetes Secret), else <state>/auth/keys.json."""
    return (
        Path(os.environ["AISEMBLE_KEYS_FILE"])
        if os.environ.get("AISEMBLE_KEYS_FILE")
        else state_dir() / "auth" / "keys.json"
    )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_of(secret: str) -> str | None:
    """The id part of a key (`ais_<id>_<random>`), None when the text is not shaped like one of ours."""
    prefix, _, rest = secret.partition("_")
    key_id, _, random_part = rest.partition("_")
    if prefix != _PREFIX or len(key_id) != 8 or len(random_part) < 32:
        return None
    return key_id


@dataclass(frozen=True)
class ApiKey:
    """One key's record: who it is (role, models) and its quotas (None: unlimited). The secret is not kept."""

    key_id: str
    role: str
    digest: str
    name: str = ""
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    created_at: str = ""
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None

    def allows_model(self, model: str) -> bool:
        """Whether this key may call `model` (a key naming no models may call all)."""
        return not self.models or model in self.models

    def matches(self, secret: str) -> bool:
        """Constant-time comparison of a presented secret with the stored digest."""
        return hmac.compare_digest(self.digest, _digest(secret))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the keys file."""
        data = asdict(self)
        data["models"] = list(self.models)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApiKey:
        """Parse one record of the keys file."""
        return cls(**{**data, "models": tuple(data.get("models") or ())})


def write_private(path: Path, text: str) -> None:
    """Write a secret-holding file atomically, readable by its owner only (0600, folder 0700)."""
    write_atomically(path, text, private=True)


@dataclass
class KeyFile:
    """The keys file (JSON, mode 0600): read by the gateway, written by `aisemble keys` under an flock."""

    path: Path = field(default_factory=default_keys_path)

    def read(self) -> dict[str, ApiKey]:
        """key id -> record; empty when the file does not exist."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {entry["key_id"]: ApiKey.from_dict(entry) for entry in document.get("keys", [])}

    def stamp(self) -> tuple[int, int, int] | None:
        """(inode, size, mtime ns) of the file, to notice a change cheaply; None when it does not exist."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, ApiKey]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self.read()
            yield keys
            document = {"format": 1, "keys": [key.to_dict() for key in keys.values()]}
            write_private(self.path, json.dumps(document, indent=2) + "\n")

    def create(
        self,
        role: str,
        *,
        name: str = "",
        models: Sequence[str] = (),
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrent: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key: (its record, the secret, to show once)."""
        if role not in ROLES:
            raise InvalidArgumentError.for_field("role", f"must be one of {', '.join(ROLES)} (got {role!r})")
        for label, value in (("rpm", rpm), ("tpm", tpm), ("max_concurrent", max_concurrent)):
            if value is not None and value < 1:
                raise InvalidArgumentError.for_field(label, "must be >= 1 (leave it out for no limit)")
        with self._locked() as keys:
            key_id = secrets.token_hex(4)
            while key_id in keys:
                key_id = secrets.token_hex(4)
            secret = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
            record = ApiKey(
                key_id=key_id,
                role=role,
                digest=_digest(secret),
                name=name,
                models=tuple(models),
                rpm=rpm,
                tpm=tpm,
                max_concurrent=max_concurrent,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            keys[key_id] = record
        return record, secret

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept in the file, so its usage stays on record)."""
        with self._locked() as keys:
            record = keys.get(key_id)
            if record is None:
                raise NotFoundError(f"no key with id '{key_id}'", reason="KEY_NOT_FOUND", metadata={"key_id": key_id})
            if record.active:
                keys[key_id] = replace(record, revoked_at=datetime.now(UTC).isoformat(timespec="seconds"))
            return keys[key_id]


class KeyRing:
    """The gateway's view of the keys file, re-read when the file changes (checked at most every `recheck_s`)."""

    def __init__(self, keys: KeyFile, recheck_s: float = 0.5) -> None:
        self.file = keys
        self._recheck_s = recheck_s
        self._checked = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[str, ApiKey] = {}
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Re-read the file if it changed since the last look."""
        now = time.monotonic()
        if not force and now - self._checked < self._recheck_s:
            return
        self._checked = now
        stamp = self.file.stamp()
        if force or stamp != self._stamp:
            self._stamp = stamp
            self._keys = self.file.read()

    @property
    def path(self) -> Path:
        """The keys file."""
        return self.file.path

    def get(self, key_id: str) -> ApiKey | None:
        """A key by id (revoked ones included); an unknown id looks at the file again at once (a stat), so a key
        made a moment ago works on its first call."""
        self.refresh()
        if key_id not in self._keys:
            self._checked = 0.0
            self.refresh()
        return self._keys.get(key_id)

    def find(self, secret: str) -> ApiKey | None:
        """The record whose digest matches the presented secret, or None."""
        key_id = key_id_of(secret)
        record = self.get(key_id) if key_id else None
        return record if record is not None and record.matches(secret) else None

    def has_user_keys(self) -> bool:
        """Whether any active key of role `user` exists (then inference needs a key too)."""
        self.refresh()
        return any(k.active and k.role == "user" for k in self._keys.values())

    def has_keys(self) -> bool:
        """Whether any active admin or user key exists."""
        self.refresh()
        return any(k.active and k.role in ("admin", "user") for k in self._keys.values())
