"""The training loop: seeded batches, reports, checkpoints, and a resumed run equal to an uninterrupted one.

A tiny torch trainer (a linear model on fixed data) stands in for the real trainers, which the integration
tests run; the loop itself is the real one.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from services.finetune.trainers.base import (
    CHECKPOINT_FILE,
    OUTPUT_DIR,
    RESULT_FILE,
    Trainer,
    TrainingFailedError,
    WorkerRequest,
    batch_order,
    run_training,
)
from services.finetune.types import Evaluation, Hyperparameters, LogSeverity, Progress


class Recorder:
    """A Reporter that keeps everything."""

    def __init__(self) -> None:
        self.reports: list[Progress] = []
        self.evaluations: list[Evaluation] = []
        self.logs: list[str] = []
        self.checkpoints: list[int] = []

    def progress(self, progress: Progress) -> None:
        self.reports.append(progress)

    def evaluation(self, evaluation: Evaluation) -> None:
        self.evaluations.append(evaluation)

    def log(self, severity: LogSeverity, message: str) -> None:
        self.logs.append(message)

    def checkpoint(self, step: int) -> None:
        self.checkpoints.append(step)


class _Stop(Exception):
    """Raised by the tiny trainer to simulate a kill after some step."""


class TinyTrainer(Trainer):
    """Linear regression with dropout: needs the RNG state, the optimiser state and the batch order to resume."""

    stop_after: int | None = None

    def __init__(self, request: WorkerRequest, reporter: Any) -> None:
        super().__init__(request, reporter)
        generator = torch.Generator().manual_seed(7)
        self.x = torch.randn(10, 4, generator=generator)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
        self.losses: list[float] = []
        self.steps = 0

    @property
    def example_count(self) -> int:
        return 10

    def prepare(self, total_steps: int) -> None:
        self.model = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(4, 1))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.settings.learning_rate)

    def train_step(self, indices: Sequence[int]) -> float:
        if self.stop_after is not None and self.steps == self.stop_after:
            raise _Stop
        self.steps += 1
        index = list(indices)
        loss = torch.nn.functional.mse_loss(self.model(self.x[index]).squeeze(-1), self.y[index])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.losses.append(float(loss.detach()))
        return float(loss.detach()) if self.settings.learning_rate < 1 else math.nan

    def evaluate(self) -> tuple[float, float | None] | None:
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(self.model[1](self.x).squeeze(-1), self.y)), None

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def export(self, folder: Path, metrics: dict[str, float]) -> dict[str, Any]:
        torch.save(self.model.state_dict(), folder / "weights.pt")
        return {"kind": "tiny"}


def _request(job_dir: Path, learning_rate: float = 0.05, interval: float = 0.0) -> WorkerRequest:
    job_dir.mkdir(parents=True, exist_ok=True)
    settings = Hyperparameters(learning_rate=learning_rate, epochs=3, batch_size=4, max_length=8, seed=3)
    return WorkerRequest(
        job_id="job",
        task="causal-lm",
        job_dir=str(job_dir),
        base_model="tiny",
        base_artifact="tiny",
        base_dir=str(job_dir),
        hyperparameters=settings.to_dict(),
        checkpoint_interval_s=interval,
    )


def test_batches_cover_every_example_once_per_epoch_in_a_seeded_order():
    first = batch_order(10, 4, seed=3, epoch=0)
    assert [len(b) for b in first] == [4, 4, 2] and sorted(itertools.chain(*first)) == list(range(10))
    assert batch_order(10, 4, seed=3, epoch=0) == first and batch_order(10, 4, seed=3, epoch=1) != first


def test_a_run_reports_progress_evaluations_and_writes_a_complete_output(tmp_path):
    reporter = Recorder()
    trainer = TinyTrainer(_request(tmp_path / "job", interval=3600.0), reporter)
    result = run_training(trainer, reporter)
    assert [p.step for p in reporter.reports][-1] == 9 and reporter.reports[-1].total_steps == 9
    assert [p.epoch for p in reporter.reports if p.step % 3 == 0] == [1, 2, 3]
    assert [(e.step, e.epoch) for e in reporter.evaluations] == [(3, 1), (6, 2), (9, 3)]
    assert reporter.checkpoints == []  # an hour between checkpoints: none in a short run
    job = tmp_path / "job"
    assert (job / OUTPUT_DIR / "weights.pt").exists() and not (job / (OUTPUT_DIR + ".partial")).exists()
    assert json.loads((job / RESULT_FILE).read_text()) == result
    assert result["info"] == {"kind": "tiny"} and result["steps"] == 9
    assert set(result["metrics"]) == {"train_loss", "validation_loss"}


def test_a_resumed_run_computes_exactly_what_an_uninterrupted_run_does(tmp_path):
    whole = TinyTrainer(_request(tmp_path / "whole"), Recorder())
    run_training(whole, Recorder())

    reporter = Recorder()
    interrupted = TinyTrainer(_request(tmp_path / "cut"), reporter)
    interrupted.stop_after = 5
    with pytest.raises(_Stop):
        run_training(interrupted, reporter)
    assert reporter.checkpoints == [1, 2, 3, 4, 5] and (tmp_path / "cut" / CHECKPOINT_FILE).exists()

    reporter = Recorder()
    resumed = TinyTrainer(_request(tmp_path / "cut"), reporter)
    run_training(resumed, reporter)
    assert reporter.logs == ["resumed from the checkpoint of step 5 of 9"]
    assert reporter.reports[0].step == 6
    assert interrupted.losses + resumed.losses == whole.losses  # bit for bit
    assert torch.equal(
        torch.load(tmp_path / "whole" / OUTPUT_DIR / "weights.pt")["1.weight"],
        torch.load(tmp_path / "cut" / OUTPUT_DIR / "weights.pt")["1.weight"],
    )


def test_a_diverging_loss_fails_the_job_with_advice(tmp_path):
    trainer = TinyTrainer(_request(tmp_path / "job", learning_rate=5.0), Recorder())
    with pytest.raises(TrainingFailedError, match=r"diverged.*lower the learning rate"):
        run_training(trainer, Recorder())
    assert not (tmp_path / "job" / OUTPUT_DIR).exists()
