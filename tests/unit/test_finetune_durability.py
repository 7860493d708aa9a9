"""What the fine-tuning service writes is on disk before it counts: uploads, checkpoints and results fsynced."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from aisemble.config.state import replacing_atomically, write_bytes_atomically
from services.finetune.limits import FineTuneLimits
from services.finetune.tracker import JobTracker
from services.finetune.trainers.base import CHECKPOINT_FILE, OUTPUT_DIR, RESULT_FILE, _save_checkpoint, run_training
from services.finetune.types import Task
from services.finetune.uploads import TrainingFiles, UploadHeader
from services.finetune.workspace import Workspace
from tests.unit.test_finetune_training_loop import Recorder, TinyTrainer, _request


class Syncs:
    """os.fsync, recorded: which inodes were flushed (files and folders), in order with other marks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[tuple[str, int]] = []
        real = os.fsync

        def fsync(descriptor: int) -> None:
            info = os.fstat(descriptor)
            self.log.append(("dir" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))
            real(descriptor)

        monkeypatch.setattr(os, "fsync", fsync)

    def mark(self, what: str) -> None:
        self.log.append((what, 0))

    def index(self, kind: str, path: Path) -> int:
        """Where in the log `path` (as it is now) was fsynced; ValueError when it never was."""
        return self.log.index((kind, path.stat().st_ino))


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 7):
        yield data[start : start + 7]


async def test_an_upload_is_fsynced_with_its_folder_before_it_is_recorded(tmp_path, monkeypatch):
    workspace = Workspace(tmp_path / "data")
    workspace.create()
    tracker = JobTracker()
    tracker.open(workspace.journal_path)
    files = TrainingFiles(tracker, workspace, FineTuneLimits())
    syncs = Syncs(monkeypatch)
    add_file = tracker.journal.add_file
    monkeypatch.setattr(tracker.journal, "add_file", lambda file: (syncs.mark("recorded"), add_file(file)))
    data = b'{"text": "the court ruled", "label": "legal"}\n{"text": "a fever", "label": "medical"}\n'
    try:
        file = await files.receive(UploadHeader("examples.jsonl", Task.TEXT_CLASSIFICATION), _chunks(data))
        path = workspace.file_path(file.file_id)
        assert path.read_bytes() == data
        recorded = syncs.log.index(("recorded", 0))
        assert syncs.index("file", path) < recorded  # the bytes, then their folder entry, then the journal
        assert syncs.index("file", path) < syncs.index("dir", path.parent) < recorded
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left
    finally:
        tracker.close()


def test_a_checkpoint_is_fsynced_renamed_and_a_crash_mid_write_keeps_the_previous_one(tmp_path, monkeypatch):
    request = _request(tmp_path / "job")
    trainer = TinyTrainer(request, Recorder())
    trainer.prepare(9)
    checkpoint = tmp_path / "job" / CHECKPOINT_FILE
    syncs = Syncs(monkeypatch)
    _save_checkpoint(checkpoint, 3, trainer)
    assert syncs.index("file", checkpoint) < syncs.index("dir", checkpoint.parent)
    assert torch.load(checkpoint, weights_only=False)["step"] == 3

    real_save = torch.save

    def dies_half_way(obj: object, handle: object) -> None:
        real_save({"step": 4}, handle)
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        _save_checkpoint(checkpoint, 4, trainer)
    assert torch.load(checkpoint, weights_only=False)["step"] == 3
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == [CHECKPOINT_FILE]


def test_the_output_is_on_disk_before_the_result_says_it_is_complete(tmp_path, monkeypatch):
    reporter = Recorder()
    trainer = TinyTrainer(_request(tmp_path / "job", interval=0.0), reporter)
    syncs = Syncs(monkeypatch)
    result = run_training(trainer, reporter)
    job = tmp_path / "job"
    assert reporter.checkpoints  # a checkpoint after every step
    weights = syncs.index("file", job / OUTPUT_DIR / "weights.pt")
    done = syncs.index("file", job / RESULT_FILE)
    assert weights < syncs.index("dir", job / OUTPUT_DIR) < done < len(syncs.log) - 1  # and the folder after
    assert syncs.log[-1] == ("dir", job.stat().st_ino)
    assert json.loads((job / RESULT_FILE).read_text()) == result
    assert not list(job.glob(".*.tmp"))


def test_an_atomic_binary_write_that_fails_leaves_the_old_file(tmp_path):
    path = tmp_path / "blob.bin"
    write_bytes_atomically(path, b"old")
    with pytest.raises(RuntimeError), replacing_atomically(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("the writer failed")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin"]
    write_bytes_atomically(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o600
