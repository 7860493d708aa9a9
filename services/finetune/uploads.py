"""Uploaded training files: the header checked, the bytes received within the size limit, verified and stored.

A file is on disk (written to a temporary name, fsynced, renamed, its folder fsynced) before it is recorded
in the journal and UploadTrainingFile answers: a file id the client was given survives a power cut.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aisemble.config.state import write_bytes_atomically
from aisemble.errors import FieldViolation, InvalidArgumentError, NotFoundError
from services.finetune.examples import Example, parse_jsonl
from services.finetune.limits import FineTuneLimits
from services.finetune.tracker import JobTracker
from services.finetune.types import Task, TrainingFile
from services.finetune.workspace import Workspace

__all__ = ["TrainingFiles", "UploadHeader"]


@dataclass(frozen=True)
class UploadHeader:
    """The first message of an upload."""

    filename: str
    task: Task | None
    size_bytes: int = 0
    sha256: str = ""


class TrainingFiles:
    """Receives uploads (every line checked before the file is kept) and reads a kept file's examples back."""

    def __init__(self, tracker: JobTracker, workspace: Workspace, limits: FineTuneLimits) -> None:
        self.tracker = tracker
        self.workspace = workspace
        self.limits = limits

    async def receive(self, header: UploadHeader, chunks: AsyncIterator[bytes]) -> TrainingFile:
        """Receive, check (size, SHA-256, every line) and store a training file."""
        limit = self.limits.max_upload_bytes
        violations: list[FieldViolation] = []
        if not header.filename or "/" in header.filename or "\\" in header.filename:
            violations.append(FieldViolation("header.filename", "is required: a file name without folders"))
        if header.task is None:
            violations.append(FieldViolation("header.task", "is required: the task whose examples the file holds"))
        if header.size_bytes < 0:
            violations.append(FieldViolation("header.size_bytes", "must be >= 0"))
        if header.sha256 and (len(header.sha256) != 64 or any(c not in "0123456789abcdef" for c in header.sha256)):
            violations.append(FieldViolation("header.sha256", "must be 64 lowercase hexadecimal digits"))
        if violations:
            raise InvalidArgumentError(
                "; ".join(f"{v.field}: {v.description}" for v in violations), field_violations=violations
            )
        if header.size_bytes > limit:
            raise self._too_large("header.size_bytes", header.size_bytes)
        data = bytearray()
        async for chunk in chunks:
            data += chunk
            if len(data) > limit:
                raise self._too_large("chunk", len(data), at_least=True)
        if header.size_bytes and len(data) != header.size_bytes:
            raise InvalidArgumentError.for_field(
                "header.size_bytes",
                f"says {header.size_bytes} bytes; {len(data)} arrived",
                reason="SIZE_MISMATCH",
            )
        digest = hashlib.sha256(data).hexdigest()
        if header.sha256 and digest != header.sha256:
            raise InvalidArgumentError.for_field(
                "header.sha256",
                f"says {header.sha256}; the bytes that arrived hash to {digest}",
                reason="CHECKSUM_MISMATCH",
            )
        assert header.task is not None
        examples = await asyncio.to_thread(parse_jsonl, bytes(data), header.task, self.limits.examples)
        file = TrainingFile(
            file_id=f"file-{secrets.token_hex(8)}",
            filename=header.filename,
            size_bytes=len(data),
            sha256=digest,
            example_count=len(examples),
            task=header.task,
            created_at=time.time(),
        )
        await asyncio.to_thread(write_bytes_atomically, self.workspace.file_path(file.file_id), bytes(data))
        self.tracker.journal.add_file(file)
        return file

    async def examples(self, file_id: str, task: Task) -> tuple[list[Example], str]:
        """A stored file's examples for a job of this task, and the file's SHA-256."""
        file = self.tracker.journal.file(file_id)
        if file is None:
            raise NotFoundError(
                f"training file '{file_id}' does not exist (upload it with UploadTrainingFile)",
                reason="FILE_NOT_FOUND",
                metadata={"file_id": file_id},
            )
        if file.task != task:
            raise InvalidArgumentError.for_field(
                "training_file_id",
                f"the file holds examples for {file.task.name}, not for a {task.name} job",
                reason="FILE_WRONG_TASK",
            )
        data = await asyncio.to_thread(self.workspace.file_path(file.file_id).read_bytes)
        examples = await asyncio.to_thread(parse_jsonl, data, task, self.limits.examples)
        return examples, file.sha256

    def _too_large(self, where: str, size: int, at_least: bool = False) -> InvalidArgumentError:
        # INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: the same file sent again cannot succeed.
        what = f"more than {size - 1}" if at_least else str(size)
        return InvalidArgumentError.for_field(
            where,
            f"the file is {what} bytes; the limit is {self.limits.max_upload_bytes} bytes",
            reason="FILE_TOO_LARGE",
            metadata={"limit_bytes": str(self.limits.max_upload_bytes)},
        )
