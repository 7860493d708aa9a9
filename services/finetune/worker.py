"""The training worker: the entry point of the spawned process that trains one job and reports over a pipe.

Messages to the service (messages.py): Progress, Evaluation, LogLine and CheckpointSaved reports, then
exactly one of TrainingFinished (the result's description) or TrainingFailed (why).
The worker stops at once on SIGTERM (the service's cancel and shutdown), and exits by itself when
the service that started it is gone (killed): its parent changes or the pipe breaks at the next
report. A per-job file lock makes a new worker wait until such an orphan has exited.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from services.finetune.messages import CheckpointSaved, TrainingFailed, TrainingFinished, WorkerMessage
from services.finetune.trainers.base import TrainingFailedError, WorkerRequest, run_training, trainer_for
from services.finetune.types import Evaluation, LogLine, LogSeverity, Progress

__all__ = ["PipeReporter", "main"]

log = logging.getLogger("aisemble.finetune.worker")

_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # no loading bars in the service's log
}
_LOCK_FILE = "worker.lock"
_LOCK_WAIT_S = 120.0
_ORPHAN_EXIT = 3


class PipeReporter:
    """Sends the training loop's reports to the service; exits the process when the service is gone."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.parent = os.getppid()

    def send(self, message: WorkerMessage) -> None:
        """Send one message, or exit if nobody is listening any more."""
        if os.getppid() != self.parent:
            log.warning("the fine-tuning service that started this worker is gone; stopping")
            os._exit(_ORPHAN_EXIT)
        try:
            self.connection.send(message)
        except (BrokenPipeError, EOFError, OSError):
            os._exit(_ORPHAN_EXIT)

    def progress(self, progress: Progress) -> None:
        self.send(progress)

    def evaluation(self, evaluation: Evaluation) -> None:
        self.send(evaluation)

    def log(self, severity: LogSeverity, message: str) -> None:
        self.send(LogLine(severity, message))

    def checkpoint(self, step: int) -> None:
        self.send(CheckpointSaved(step))


@contextlib.contextmanager
def _job_lock(job_dir: Path, reporter: PipeReporter) -> Iterator[None]:
    """Hold the job's lock file; waits for a worker left over from a killed service to exit first."""
    with (job_dir / _LOCK_FILE).open("a+") as handle:
        deadline = time.monotonic() + _LOCK_WAIT_S
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TrainingFailedError("an earlier worker of this job is still running") from None
                if not waiting:
                    waiting = True
                    reporter.log(LogSeverity.INFO, "waiting for the previous worker of this job to exit")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(request: WorkerRequest, connection: Connection) -> None:
    """Train the job and send the result (the spawned process's target)."""
    for key, value in _ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s finetune-worker {request.job_id}: %(message)s",
    )
    reporter = PipeReporter(connection)
    try:
        started = time.monotonic()
        with _job_lock(Path(request.job_dir), reporter):
            import torch
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            if request.threads:
                torch.set_num_threads(request.threads)
            trainer = trainer_for(request, reporter)
            reporter.log(LogSeverity.INFO, f"worker ready in {time.monotonic() - started:.1f} s (pid {os.getpid()})")
            result = run_training(trainer, reporter)
        reporter.send(TrainingFinished(result))
    except TrainingFailedError as exc:
        reporter.send(TrainingFailed(str(exc)))
    except Exception as exc:  # the job fails with a message; the traceback stays in this worker's log
        log.exception("training failed")
        reporter.send(TrainingFailed(f"training failed: {type(exc).__name__}: {exc}"))
    finally:
        connection.close()
