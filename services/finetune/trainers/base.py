"""The trainer interface and the one training loop: epochs, seeded batches, progress, evaluation, checkpoints.

A trainer knows its model (load, one optimiser step, evaluate, state, export); the loop owns the
order of the examples, the reports and the checkpoints, so that every trainer resumes the same way:
a checkpoint holds the step, the trainer's state and the RNG states, written to a temporary file, fsynced
and renamed, the folder fsynced (a kill or a power cut at any instant leaves the previous checkpoint or the
new one). Resuming replays the
same batch order from the next step, so a resumed run computes what the uninterrupted run would have.
"""

from __future__ import annotations

import abc
import json
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aisemble.config.state import fsync_directory, fsync_tree, replacing_atomically, write_atomically
from services.finetune.types import Evaluation, Hyperparameters, LogSeverity, Progress

__all__ = [
    "CHECKPOINT_FILE",
    "OUTPUT_DIR",
    "RESULT_FILE",
    "Reporter",
    "Trainer",
    "TrainingFailedError",
    "WorkerRequest",
    "batch_order",
    "run_training",
    "trainer_for",
    "warmup_then_linear",
]

#: Inside a job's folder: the latest checkpoint, the finished model files, the result's description.
CHECKPOINT_FILE = "checkpoint.pt"
OUTPUT_DIR = "output"
RESULT_FILE = "result.json"
_PARTIAL = ".partial"
#: At most this often a progress report (the last step of an epoch and of the run is always reported).
_PROGRESS_EVERY_S = 0.5


class TrainingFailedError(Exception):
    """Training cannot go on for a reason the job's owner can act on (the message says which)."""


@dataclass(frozen=True)
class WorkerRequest:
    """Everything a worker process needs to train one job (picklable: it crosses the spawn boundary)."""

    job_id: str
    task: str
    job_dir: str
    base_model: str
    base_artifact: str
    base_dir: str
    hyperparameters: dict[str, Any]
    labels: tuple[str, ...] = ()
    checkpoint_interval_s: float = 30.0
    threads: int = 0

    @property
    def settings(self) -> Hyperparameters:
        """The effective hyper-parameters."""
        return Hyperparameters.from_dict(self.hyperparameters)


class Reporter(Protocol):
    """Where the loop and the trainers send what happens (the worker forwards it to the service)."""

    def progress(self, progress: Progress) -> None: ...

    def evaluation(self, evaluation: Evaluation) -> None: ...

    def log(self, severity: LogSeverity, message: str) -> None: ...

    def checkpoint(self, step: int) -> None: ...


class Trainer(abc.ABC):
    """One kind of fine-tuning. Never imports grpc; raises TrainingFailedError for the job owner's problems."""

    def __init__(self, request: WorkerRequest, reporter: Reporter) -> None:
        self.request = request
        self.reporter = reporter
        self.settings = request.settings
        self.job_dir = Path(request.job_dir)

    @property
    @abc.abstractmethod
    def example_count(self) -> int:
        """Training examples (the loop batches their indices)."""

    @abc.abstractmethod
    def prepare(self, total_steps: int) -> None:
        """Load the base model and the examples; build the optimiser for total_steps steps."""

    @abc.abstractmethod
    def train_step(self, indices: Sequence[int]) -> float:
        """One optimiser step on these training examples; returns the loss."""

    @abc.abstractmethod
    def evaluate(self) -> tuple[float, float | None] | None:
        """(validation loss, accuracy or None) on the validation examples; None without any."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume (trainable weights, optimiser, scheduler)."""

    @abc.abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Load what state() returned."""

    @abc.abstractmethod
    def export(self, folder: Path, metrics: dict[str, float]) -> dict[str, Any]:
        """Write the artifact's files into folder; returns the manifest's `info`."""


def trainer_for(request: WorkerRequest, reporter: Reporter) -> Trainer:
    """The trainer of a request's task: LoRA for causal LM, a classification head otherwise (imported on use)."""
    from services.finetune.types import Task

    if Task(request.task) == Task.CAUSAL_LM:
        from services.finetune.trainers.causal_lm import LoraTrainer

        return LoraTrainer(request, reporter)
    from services.finetune.trainers.classifier import ClassifierTrainer

    return ClassifierTrainer(request, reporter)


def batch_order(count: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a seeded shuffle of the example indices, cut into batch_size pieces."""
    order = list(range(count))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def warmup_then_linear(total_steps: int) -> Any:
    """LambdaLR factor: linear warm-up over the first 10% of the steps (at most 100), then linear decay to 0."""
    warmup = max(1, min(100, total_steps // 10))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _save_checkpoint(path: Path, step: int, trainer: Trainer) -> None:
    import torch

    state = {"step": step, "trainer": trainer.state(), "torch_rng": torch.get_rng_state(), "random": random.getstate()}
    with replacing_atomically(path) as handle:
        torch.save(state, handle)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def run_training(trainer: Trainer, reporter: Reporter) -> dict[str, Any]:
    """Train (resuming from the job's checkpoint when there is one), export; returns the result's description.

    The finished files are written to <job>/output.partial and renamed to <job>/output, then the result's
    description to <job>/result.json: once that file exists the output is complete and only needs
    publishing (a service restarted at that point publishes it without training again).
    """
    import torch

    request = trainer.request
    settings = trainer.settings
    job_dir = Path(request.job_dir)
    torch.manual_seed(settings.seed % 2**63)
    random.seed(settings.seed)
    count = trainer.example_count
    steps_per_epoch = math.ceil(count / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    trainer.prepare(total)
    checkpoint = job_dir / CHECKPOINT_FILE
    step = 0
    if checkpoint.exists():
        saved = _load_checkpoint(checkpoint)
        trainer.restore(saved["trainer"])
        torch.set_rng_state(saved["torch_rng"])
        random.setstate(saved["random"])
        step = int(saved["step"])
        reporter.log(LogSeverity.INFO, f"resumed from the checkpoint of step {step} of {total}")
    first_step, started, last_report, last_checkpoint = step, time.monotonic(), 0.0, time.monotonic()
    loss = math.nan
    metrics: dict[str, float] = {}
    batches: list[list[int]] = []
    while step < total:
        epoch, within = divmod(step, steps_per_epoch)
        if within == 0 or not batches:
            batches = batch_order(count, settings.batch_size, settings.seed, epoch)
        loss = trainer.train_step(batches[within])
        if not math.isfinite(loss):
            raise TrainingFailedError(
                f"training diverged: the loss is {loss} at step {step + 1}; lower the learning rate "
                f"(it is {settings.learning_rate:g})"
            )
        step += 1
        metrics["train_loss"] = loss
        end_of_epoch = step % steps_per_epoch == 0
        now = time.monotonic()
        if end_of_epoch or now - last_report >= _PROGRESS_EVERY_S:
            last_report = now
            rate = (now - started) / (step - first_step)
            reporter.progress(
                Progress(
                    step=step,
                    total_steps=total,
                    epoch=epoch + 1,
                    total_epochs=settings.epochs,
                    eta_s=rate * (total - step),
                    train_loss=loss,
                )
            )
        if end_of_epoch:
            evaluated = trainer.evaluate()
            if evaluated is not None:
                metrics["validation_loss"], accuracy = evaluated
                if accuracy is not None:
                    metrics["validation_accuracy"] = accuracy
                reporter.evaluation(Evaluation(step, epoch + 1, evaluated[0], accuracy))
        if step < total and now - last_checkpoint >= request.checkpoint_interval_s:
            _save_checkpoint(checkpoint, step, trainer)
            last_checkpoint = time.monotonic()
            reporter.checkpoint(step)
    output = job_dir / OUTPUT_DIR
    partial = job_dir / (OUTPUT_DIR + _PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    info = trainer.export(partial, metrics)
    fsync_tree(partial)  # the output is on disk before result.json says it is complete
    shutil.rmtree(output, ignore_errors=True)
    os.replace(partial, output)
    fsync_directory(job_dir)
    result = {"info": info, "metrics": {k: v for k, v in metrics.items() if math.isfinite(v)}, "steps": total}
    write_atomically(job_dir / RESULT_FILE, json.dumps(result))
    return result
