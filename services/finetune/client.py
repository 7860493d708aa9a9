"""The `aisemble finetune ...` commands: upload a JSONL file, create a job, follow it with a live progress bar.

`aisemble finetune create --base minilm-l6 --task text-classification --file data/domain_classification.jsonl
--name domain-classifier --watch` uploads the file (checked by the service, line by line), creates the
job and draws a tqdm bar from the job's events (step, epoch, loss, validation accuracy, ETA); log lines
and state changes are printed above the bar. The exit status is 0 when the job SUCCEEDED.
`aisemble finetune plot JOB -o loss.png` draws the training and validation loss per step from the job's events.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aisemble.finetune.v1 import finetune_service_pb2 as pb
from aisemble.rpc.client import PLAINTEXT, Peer

__all__ = ["LossHistory", "add_parsers", "draw_loss_plot", "loss_history", "run", "upload_file", "watch_job"]

_TASKS = {"causal-lm": pb.FINE_TUNE_TASK_CAUSAL_LM, "text-classification": pb.FINE_TUNE_TASK_TEXT_CLASSIFICATION}
_CHUNK = 1024 * 1024
_SETTINGS = (
    ("learning_rate", float),
    ("epochs", int),
    ("batch_size", int),
    ("max_length", int),
    ("lora_rank", int),
    ("lora_alpha", float),
    ("unfrozen_layers", int),
    ("seed", int),
)


def _state(value: int) -> str:
    return pb.FineTuneJobState.Name(value).removeprefix("FINE_TUNE_JOB_STATE_")


def upload_file(stub: Any, path: Path, task: Any, timeout: float) -> pb.TrainingFile:
    """Stream a JSONL file (header with size and SHA-256, then 1 MiB chunks); the service checks every line."""
    data = path.read_bytes()
    header = pb.TrainingFileHeader(
        filename=path.name, task=task, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
    )

    def messages() -> Iterator[pb.UploadTrainingFileRequest]:
        yield pb.UploadTrainingFileRequest(header=header)
        for start in range(0, len(data), _CHUNK):
            yield pb.UploadTrainingFileRequest(chunk=data[start : start + _CHUNK])

    return stub.UploadTrainingFile(messages(), timeout=timeout).file


def watch_job(stub: Any, job_id: str, out: TextIO) -> int:
    """Follow a job's events with a progress bar until it ends; returns its final state."""
    from tqdm import tqdm

    final = pb.FINE_TUNE_JOB_STATE_UNSPECIFIED
    with tqdm(total=None, desc=job_id, unit="step", file=out, dynamic_ncols=True) as bar:
        for reply in stub.WatchFineTuneJob(pb.WatchFineTuneJobRequest(job_id=job_id)):
            event = reply.event
            kind = event.WhichOneof("kind")
            if kind == "progress":
                progress = event.progress
                if bar.total != progress.total_steps:
                    bar.reset(total=progress.total_steps)
                bar.update(progress.step - bar.n)
                postfix = {"epoch": f"{progress.epoch}/{progress.total_epochs}"}
                if progress.HasField("train_loss"):
                    postfix["loss"] = f"{progress.train_loss:.4f}"
                bar.set_postfix(postfix, refresh=True)
            elif kind == "evaluation":
                evaluation = event.evaluation
                line = f"epoch {evaluation.epoch}: validation loss {evaluation.validation_loss:.4f}"
                if evaluation.HasField("validation_accuracy"):
                    line += f", accuracy {evaluation.validation_accuracy:.3f}"
                bar.write(line, file=out)
            elif kind == "log":
                bar.write(event.log.message, file=out)
            elif kind == "state_change":
                change = event.state_change
                final = change.state
                message = f": {change.message}" if change.message else ""
                bar.write(f"[{_state(change.state)}]{message}", file=out)
    return final


_TERMINAL = (pb.FINE_TUNE_JOB_STATE_SUCCEEDED, pb.FINE_TUNE_JOB_STATE_FAILED, pb.FINE_TUNE_JOB_STATE_CANCELLED)


@dataclass
class LossHistory:
    """A job's losses by step, from its events (a step trained again after a resume keeps its latest loss)."""

    job: pb.FineTuneJob
    train: dict[int, float] = field(default_factory=dict)
    validation: dict[int, float] = field(default_factory=dict)


def loss_history(stub: Any, job_id: str, follow: bool, timeout: float) -> LossHistory:
    """The training and validation losses of a job, read from its event history (WatchFineTuneJob from the start).
    A job still running is read up to the step it had reached when asked, or, with follow, until it ends."""
    job = stub.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=job_id), timeout=timeout).job
    history = LossHistory(job)
    until = None if follow or job.state in _TERMINAL else job.progress.step
    if until == 0:
        return history
    events = stub.WatchFineTuneJob(pb.WatchFineTuneJobRequest(job_id=job_id), timeout=None if follow else timeout)
    for reply in events:
        event = reply.event
        kind = event.WhichOneof("kind")
        if kind == "progress" and event.progress.HasField("train_loss"):
            history.train[event.progress.step] = event.progress.train_loss
        elif kind == "evaluation":
            history.validation[event.evaluation.step] = event.evaluation.validation_loss
        if until is not None and kind == "progress" and event.progress.step >= until:
            events.cancel()
            break
    if follow:
        history.job = stub.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=job_id), timeout=timeout).job
    return history


def draw_loss_plot(history: LossHistory, path: Path) -> None:
    """Training loss (a line) and validation loss (points joined) against the step, as a PNG (matplotlib, which
    ultralytics brings, on its Agg canvas: no display needed)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100, layout="tight")
    axes = figure.subplots()
    if history.train:
        steps = sorted(history.train)
        axes.plot(steps, [history.train[s] for s in steps], ".-", label="training loss", color="tab:blue")
    if history.validation:
        steps = sorted(history.validation)
        axes.plot(steps, [history.validation[s] for s in steps], "o-", label="validation loss", color="tab:orange")
    job = history.job
    axes.set_title(f"{job.job_id}: {job.base_model} -> {job.result_model_name} ({_state(job.state)})")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.savefig(path, format="png")


def _plot(stub: Any, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    history = loss_history(stub, args.job_id, args.follow, args.timeout)
    if not history.train and not history.validation:
        err.write(
            f"error: job {args.job_id} has no losses yet ({_state(history.job.state)}); --follow waits for them\n"
        )
        return 1
    try:
        draw_loss_plot(history, Path(args.output).expanduser())
    except OSError as exc:
        err.write(f"error: cannot write {args.output}: {exc.strerror or exc}\n")
        return 1
    last = max(history.train, default=0)
    out.write(
        f"{args.output}: {len(history.train)} training and {len(history.validation)} validation points, "
        f"steps 1-{last}, job {_state(history.job.state)}\n"
    )
    return 0


def _settings(args: argparse.Namespace) -> pb.Hyperparameters:
    return pb.Hyperparameters(**{name: value for name, _ in _SETTINGS if (value := getattr(args, name)) is not None})


def _describe(job: pb.FineTuneJob) -> str:
    parts = [f"{job.job_id}  {_state(job.state):<11} {job.base_model} -> {job.result_model_name}"]
    if job.HasField("progress"):
        parts.append(f"step {job.progress.step}/{job.progress.total_steps}")
    if job.HasField("metrics") and job.metrics.HasField("validation_accuracy"):
        parts.append(f"validation accuracy {job.metrics.validation_accuracy:.3f}")
    if job.failure_message:
        parts.append(job.failure_message)
    return "  ".join(parts)


def run(
    args: argparse.Namespace,
    target: str,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    peer: Peer = PLAINTEXT,
) -> int:
    """Run one `aisemble finetune` action against target (the gateway or the service)."""
    import grpc

    from aisemble.finetune.v1 import finetune_service_pb2_grpc
    from aisemble.rpc.client import blocking_channel

    with blocking_channel(target, peer=peer) as channel:
        stub = finetune_service_pb2_grpc.FineTuneServiceStub(channel)
        try:
            return _run(stub, args, out, err)
        except grpc.RpcError as exc:
            err.write(f"error: {exc.code().name}: {exc.details()}\n")  # type: ignore[attr-defined]
            return 1


def _run(stub: Any, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    timeout = args.timeout
    if args.action == "upload":
        file = upload_file(stub, Path(args.path), _TASKS[args.task], timeout)
        out.write(f"{file.file_id}  {file.example_count} examples  sha256 {file.sha256}\n")
        return 0
    if args.action == "create":
        task = _TASKS[args.task]
        request = pb.CreateFineTuneJobRequest(
            base_model=args.base, task=task, hyperparameters=_settings(args), result_model_name=args.name or ""
        )
        if args.validation_split is not None:
            request.validation_split = args.validation_split
        if args.file:
            file = upload_file(stub, Path(args.file), task, timeout)
            err.write(f"uploaded {args.file}: {file.example_count} examples ({file.file_id})\n")
            request.training_file_id = file.file_id
        else:
            request.training_file_id = args.file_id
        job = stub.CreateFineTuneJob(request, timeout=timeout).job
        out.write(f"{job.job_id}\n")
        out.flush()
        if not args.watch:
            return 0
        return 0 if watch_job(stub, job.job_id, err) == pb.FINE_TUNE_JOB_STATE_SUCCEEDED else 1
    if args.action == "watch":
        return 0 if watch_job(stub, args.job_id, err) == pb.FINE_TUNE_JOB_STATE_SUCCEEDED else 1
    if args.action == "plot":
        return _plot(stub, args, out, err)
    if args.action == "get":
        job = stub.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=args.job_id), timeout=timeout).job
        out.write(_describe(job) + "\n")
        return 0
    if args.action == "list":
        jobs = stub.ListFineTuneJobs(pb.ListFineTuneJobsRequest(page_size=args.limit), timeout=timeout).jobs
        for job in jobs:
            out.write(_describe(job) + "\n")
        return 0
    job = stub.CancelFineTuneJob(pb.CancelFineTuneJobRequest(job_id=args.job_id), timeout=timeout).job
    out.write(_describe(job) + "\n")
    return 0


def add_parsers(actions: Any) -> None:
    """The sub-commands of `aisemble finetune` (actions: the `finetune` parser's add_subparsers())."""

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--address", help="host:port (default: the gateway from configs/mesh.yaml)")
        parser.add_argument("--timeout", type=float, default=60.0, help="deadline of each call, in seconds")

    create = actions.add_parser("create", help="create a job (optionally uploading its JSONL file) and watch it")
    create.add_argument("--base", required=True, help="registry name of the model to start from")
    create.add_argument("--task", required=True, choices=sorted(_TASKS))
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help='a JSONL file: {"prompt", "response"} or {"text", "label"} per line')
    source.add_argument("--file-id", help="a file uploaded before")
    create.add_argument("--name", help="registry name of the result (default: derived from the base and job)")
    create.add_argument("--validation-split", type=float, help="fraction held out, [0, 0.5) (default 0.1)")
    for name, kind in _SETTINGS:
        create.add_argument(f"--{name.replace('_', '-')}", type=kind, dest=name)
    create.add_argument("--watch", action="store_true", help="follow the job with a progress bar until it ends")
    common(create)
    upload = actions.add_parser("upload", help="upload a JSONL training file")
    upload.add_argument("path")
    upload.add_argument("--task", required=True, choices=sorted(_TASKS))
    common(upload)
    for action, text in (("watch", "follow a job"), ("get", "show a job"), ("cancel", "cancel a job")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("job_id")
        common(parser)
    plot = actions.add_parser("plot", help="draw a job's training and validation loss per step as a PNG")
    plot.add_argument("job_id")
    plot.add_argument("-o", "--output", required=True, metavar="LOSS.png", help="the PNG to write")
    plot.add_argument("--follow", action="store_true", help="wait for a running job to end, then draw all of it")
    common(plot)
    listing = actions.add_parser("list", help="list jobs, newest first")
    listing.add_argument("--limit", type=int, default=20)
    common(listing)
