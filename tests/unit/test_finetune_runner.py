"""The job runner's logic with a fake worker process (real spawn, real pipe, real journal; no model, no sockets):
the queue and its bound, cancellation, a dying worker retried then failed, recovery after a crash, shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from aisemble.config.models import ModelSpec, model_to_mapping
from aisemble.errors import FailedPreconditionError, ResourceExhaustedError
from aisemble.store.builder import StoreBuilder
from aisemble.store.model_store import ModelStore
from aisemble.store.recipe import BuildContext, Recipe
from services.finetune.examples import write_examples
from services.finetune.journal import JobJournal
from services.finetune.messages import CheckpointSaved, TrainingFailed, TrainingFinished
from services.finetune.runner import FineTuneLimits, JobRequest, JobRunner
from services.finetune.trainers.base import OUTPUT_DIR, RESULT_FILE, WorkerRequest
from services.finetune.types import (
    ClassificationExample,
    Hyperparameters,
    Job,
    JobState,
    LogLine,
    LogSeverity,
    Progress,
    StateChange,
    Task,
)

SUCCEED, HANG, DIE, FAIL = 1, 2, 3, 4


def fake_worker(request: WorkerRequest, connection: Connection) -> None:
    """Behaves as told by the job's epochs: succeed, hang until terminated, die without a word, or fail."""
    behaviour = request.hyperparameters["epochs"]
    connection.send(LogLine(LogSeverity.INFO, f"worker ready (pid {os.getpid()})"))
    if behaviour == SUCCEED:
        connection.send(Progress(step=1, total_steps=1, epoch=1, total_epochs=1, eta_s=0.0, train_loss=0.25))
        job = Path(request.job_dir)
        (job / OUTPUT_DIR).mkdir()
        (job / OUTPUT_DIR / "model.txt").write_text("trained")
        result = {"info": {"labels": list(request.labels)}, "metrics": {"train_loss": 0.25}, "steps": 1}
        (job / RESULT_FILE).write_text(json.dumps(result))
        connection.send(TrainingFinished(result))
    elif behaviour == HANG:
        connection.send(CheckpointSaved(3))
        time.sleep(600)
    elif behaviour == DIE:
        connection.send(CheckpointSaved(4))
        os._exit(9)
    else:
        connection.send(TrainingFailed("the examples are cursed"))
    connection.close()


def _base(ctx: BuildContext) -> dict[str, object]:
    (ctx.out_dir / "hf").mkdir()
    (ctx.out_dir / "hf" / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    (ctx.out_dir / "tokenizer.json").write_text("{}")
    return {}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ModelStore:
    root = tmp_path_factory.mktemp("store")
    StoreBuilder(root, recipes={"tiny-encoder": Recipe("tiny-encoder", 1, _base)}).prepare(progress=False)
    return ModelStore(root)


MODELS = {
    "tiny": ModelSpec(
        name="tiny", task="embedding", provider="onnxruntime", service="nlp", model_path="tiny-encoder", max_tokens=64
    )
}


def _runner(tmp_path: Path, store: ModelStore, **limits: object) -> JobRunner:
    settings = FineTuneLimits(**{"max_queued_jobs": 1, "stop_grace_s": 2.0, **limits})  # type: ignore[arg-type]
    return JobRunner(tmp_path / "data", store, MODELS, registry=None, limits=settings, worker_target=fake_worker)


def _request(behaviour: int, name: str = "") -> JobRequest:
    return JobRequest(
        base_model="tiny",
        task=Task.TEXT_CLASSIFICATION,
        inline_examples=[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}],
        validation_split=0.0,
        hyperparameters={"epochs": behaviour},
        result_model_name=name,
    )


async def _until(runner: JobRunner, job_id: str, *wanted: JobState, seconds: float = 60.0) -> None:
    for _ in range(int(seconds * 20)):
        if runner.get(job_id).state in wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job_id} is {runner.get(job_id).state}, not {wanted}")


async def _checkpointed(runner: JobRunner, job_id: str) -> None:
    for _ in range(600):
        if runner.get(job_id).checkpoint_step:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no checkpoint reported")


async def _states(runner: JobRunner, job_id: str) -> list[str]:
    return [e.payload.state.value async for e in runner.watch(job_id) if isinstance(e.payload, StateChange)]


async def test_the_queue_its_bound_cancellation_and_success(tmp_path, store):
    runner = _runner(tmp_path, store)
    await runner.start()
    try:
        running = await runner.create(_request(HANG))
        await _until(runner, running.job_id, JobState.RUNNING)
        await _checkpointed(runner, running.job_id)
        queued = await runner.create(_request(HANG))
        assert queued.state == JobState.QUEUED
        with pytest.raises(ResourceExhaustedError) as caught:
            await runner.create(_request(HANG))
        assert caught.value.reason == "JOB_QUEUE_FULL" and caught.value.retry_after_s

        assert (await runner.cancel(queued.job_id)).state == JobState.CANCELLED
        process = runner._active[running.job_id].process
        started = time.monotonic()
        cancelled = await runner.cancel(running.job_id)
        assert cancelled.state == JobState.CANCELLED and time.monotonic() - started < 3
        assert not process.is_alive()
        assert await _states(runner, running.job_id) == ["queued", "running", "cancelled"]
        assert runner.get(running.job_id).checkpoint_step == 3

        done = await runner.create(_request(SUCCEED, name="tiny-classifier"))
        await _until(runner, done.job_id, JobState.SUCCEEDED)
        job = runner.get(done.job_id)
        assert job.registered_model_name == "" and job.metrics.train_loss == 0.25  # no registry configured
        manifest = store.manifest("tiny-classifier")
        assert manifest.info["job_id"] == done.job_id and set(manifest.files) == {"model.txt"}
        for _ in range(100):  # the scratch output is deleted just after the job is recorded SUCCEEDED
            if not (tmp_path / "data" / "jobs" / done.job_id / OUTPUT_DIR).exists():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the job's scratch output was not deleted")
        with pytest.raises(FailedPreconditionError) as caught:
            await runner.cancel(done.job_id)
        assert caught.value.reason == "JOB_FINISHED"
        # The name is now taken (by the artifact), as for any other result name.
        with pytest.raises(Exception, match="already holds an artifact"):
            await runner.create(_request(SUCCEED, name="tiny-classifier"))
    finally:
        await runner.stop()


async def test_a_dying_worker_is_retried_then_the_job_fails(tmp_path, store):
    runner = _runner(tmp_path, store, max_attempts=2)
    await runner.start()
    try:
        job = await runner.create(_request(DIE))
        assert await _states(runner, job.job_id) == ["queued", "running", "interrupted", "running", "failed"]
        failed = runner.get(job.job_id)
        assert "stopped unexpectedly (exit code 9)" in failed.failure_message
        assert failed.failure_message.endswith("gave up after 2 attempts") and failed.attempts == 2
        reported = await runner.create(_request(FAIL))
        assert await _states(runner, reported.job_id) == ["queued", "running", "failed"]
        assert runner.get(reported.job_id).failure_message == "the examples are cursed"
    finally:
        await runner.stop()


async def test_a_job_cut_off_by_a_crash_is_interrupted_and_resumed(tmp_path, store):
    # What a killed service leaves behind: the journal says RUNNING, with a checkpoint at step 7.
    job_dir = tmp_path / "data" / "jobs" / "ftjob-crashed"
    job_dir.mkdir(parents=True)
    write_examples(job_dir / "train.jsonl", [ClassificationExample("a", "x"), ClassificationExample("b", "y")])
    write_examples(job_dir / "validation.jsonl", [])
    journal = JobJournal(tmp_path / "data" / "finetune.db")
    crashed = Job(
        job_id="ftjob-crashed",
        state=JobState.RUNNING,
        base_model="tiny",
        task=Task.TEXT_CLASSIFICATION,
        result_model_name="after-crash",
        hyperparameters=Hyperparameters(learning_rate=0.1, epochs=SUCCEED, batch_size=2, max_length=16, seed=0),
        data_sha256="0" * 64,
        training_example_count=2,
        validation_example_count=0,
        created_at=time.time(),
        base_spec=model_to_mapping(MODELS["tiny"]),
        labels=("x", "y"),
        checkpoint_step=7,
        attempts=1,
    )
    journal.save(crashed, StateChange(JobState.QUEUED, JobState.RUNNING, "training started"), new=True)
    journal.close()

    runner = _runner(tmp_path, store)
    await runner.start()
    try:
        await _until(runner, crashed.job_id, JobState.SUCCEEDED)
        changes = [e.payload for e in runner._journal.events(crashed.job_id) if isinstance(e.payload, StateChange)]
        assert [c.state for c in changes] == [
            JobState.RUNNING,
            JobState.INTERRUPTED,
            JobState.RUNNING,
            JobState.SUCCEEDED,
        ]
        assert changes[1].message == (
            "the fine-tuning service stopped while the job was running (killed or crashed); "
            "it resumes from the checkpoint of step 7"
        )
        assert changes[2].message == "resuming: it resumes from the checkpoint of step 7"
        assert store.manifest("after-crash").info["job_id"] == crashed.job_id
    finally:
        await runner.stop()


async def test_shutdown_interrupts_running_jobs_and_the_next_start_resumes_them(tmp_path, store):
    runner = _runner(tmp_path, store)
    await runner.start()
    job = await runner.create(_request(HANG))
    await _checkpointed(runner, job.job_id)
    await runner.stop()
    journal = JobJournal(tmp_path / "data" / "finetune.db")
    stopped = journal.job(job.job_id)
    journal.close()
    assert stopped.state == JobState.INTERRUPTED
    assert stopped.failure_message == (
        "the fine-tuning service was shut down while the job was running; it resumes from the checkpoint of step 3"
    )
    again = _runner(tmp_path, store)
    await again.start()
    try:
        await _until(again, job.job_id, JobState.RUNNING)
        assert (await again.cancel(job.job_id)).state == JobState.CANCELLED
    finally:
        await again.stop()


async def test_two_services_cannot_share_a_data_folder(tmp_path, store):
    first = _runner(tmp_path, store)
    await first.start()
    second = _runner(tmp_path, store)
    try:
        with pytest.raises(FailedPreconditionError) as caught:
            await second.start()
        assert caught.value.reason == "DATA_DIR_IN_USE"
    finally:
        await first.stop()
    await second.start()  # free once the first has stopped
    await second.stop()
