"""Publishing through a registry that is down: retried with backoff, then INTERRUPTED with the artifact kept, and
registered later without training again; a refusal still fails the job (fake worker and registry, no sockets)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aisemble.config.models import ModelSpec
from aisemble.errors import AlreadyExistsError, InvalidArgumentError, UnavailableError
from aisemble.store.builder import StoreBuilder
from aisemble.store.model_store import ModelStore
from aisemble.store.recipe import Recipe
from services.finetune.runner import FineTuneLimits, JobRunner
from services.finetune.types import Event, JobState, LogLine, StateChange
from tests.unit.test_finetune_runner import MODELS, SUCCEED, _base, _request, _until, fake_worker

NAME = "tiny-classifier"


class FlakyRegistry:
    """The registry client's surface: unreachable for the first `failures` registrations (None: always), or
    refusing every one (refusal)."""

    def __init__(self, failures: int | None, refusal: Exception | None = None) -> None:
        self.failures = failures
        self.refusal = refusal
        self.calls = 0
        self.reconnects = 0
        self.registered: dict[str, ModelSpec] = {}

    async def get(self, name: str) -> ModelSpec | None:
        return MODELS.get(name) or self.registered.get(name)

    async def register(self, spec: ModelSpec) -> None:
        self.calls += 1
        if self.refusal is not None:
            raise self.refusal
        if self.failures is None or self.calls <= self.failures:
            raise UnavailableError("the model registry at 127.0.0.1:1 is not reachable", reason="REGISTRY_UNAVAILABLE")
        if spec.name in self.registered:
            raise AlreadyExistsError(f"'{spec.name}' is registered")
        self.registered[spec.name] = spec

    def heal(self) -> None:
        self.failures = self.calls

    async def reconnect(self) -> None:
        self.reconnects += 1

    async def close(self) -> None:
        pass


@pytest.fixture
def store(tmp_path_factory) -> ModelStore:
    root = tmp_path_factory.mktemp("store")
    StoreBuilder(root, recipes={"tiny-encoder": Recipe("tiny-encoder", 1, _base)}).prepare(progress=False)
    return ModelStore(root)


def _runner(tmp_path: Path, store: ModelStore, registry: FlakyRegistry, **limits: object) -> JobRunner:
    settings = FineTuneLimits(**{"stop_grace_s": 2.0, "publish_retry_max_delay_s": 1.0, **limits})  # type: ignore[arg-type]
    return JobRunner(
        tmp_path / "data",
        store,
        MODELS,
        registry=registry,  # type: ignore[arg-type]
        limits=settings,
        worker_target=fake_worker,
    )


def _events(runner: JobRunner, job_id: str) -> list[Event]:
    return runner._journal.events(job_id)


def _logs(events: list[Event]) -> list[str]:
    return [e.payload.message for e in events if isinstance(e.payload, LogLine)]


def _states(events: list[Event]) -> list[str]:
    return [e.payload.state.value for e in events if isinstance(e.payload, StateChange)]


async def _logged(runner: JobRunner, job_id: str, text: str) -> None:
    for _ in range(600):
        if any(text in line for line in _logs(_events(runner, job_id))):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}: {_logs(_events(runner, job_id))}")


async def test_a_short_outage_is_retried_with_backoff_and_the_model_registered(tmp_path, store):
    registry = FlakyRegistry(failures=3)
    runner = _runner(tmp_path, store, registry, publish_retry_s=30.0, publish_retry_max_delay_s=2.0)
    await runner.start()
    try:
        job = await runner.create(_request(SUCCEED, name=NAME))
        await _until(runner, job.job_id, JobState.SUCCEEDED, JobState.FAILED)
        events = _events(runner, job.job_id)
        assert _states(events) == ["queued", "running", "succeeded"]
        retries = [line for line in _logs(events) if line.startswith("registry unreachable")]
        assert [line.split(" (")[0] for line in retries] == [
            "registry unreachable, retrying in 1 s",
            "registry unreachable, retrying in 2 s",
            "registry unreachable, retrying in 2 s",  # at most publish_retry_max_delay_s apart
        ]
        assert "127.0.0.1:1 is not reachable" in retries[0]
        assert registry.reconnects == 3 and set(registry.registered) == {NAME}
        assert runner.get(job.job_id).registered_model_name == NAME
        assert store.manifest(NAME).info["job_id"] == job.job_id
    finally:
        await runner.stop()


async def test_a_long_outage_interrupts_the_job_and_its_next_attempt_only_registers(tmp_path, store):
    registry = FlakyRegistry(failures=None)
    runner = _runner(tmp_path, store, registry, publish_retry_s=1.5)
    await runner.start()
    try:
        job = await runner.create(_request(SUCCEED, name=NAME))
        await _until(runner, job.job_id, JobState.INTERRUPTED)
        interrupted = runner.get(job.job_id)
        assert "stayed unreachable for 1.5 s" in interrupted.failure_message
        assert f"stored as '{NAME}'" in interrupted.failure_message
        # The artifact and the job's output are kept; its slot is free; it waits to be queued again.
        assert store.verify(NAME).ok and store.manifest(NAME).info["job_id"] == job.job_id
        assert runner.workspace.finished_output(job.job_id) is not None
        assert not runner._active and set(runner.scheduler.deferred) == {job.job_id}
        seen = len(_events(runner, job.job_id))
        registry.heal()
        await _until(runner, job.job_id, JobState.SUCCEEDED)
        later = _events(runner, job.job_id)[seen:]
        assert _states(later) == ["running", "succeeded"]
        assert later[0].payload.message == "resuming: training had finished; publishing the result"
        assert not [line for line in _logs(later) if "worker ready" in line]  # not trained again
        assert runner.get(job.job_id).registered_model_name == NAME and set(registry.registered) == {NAME}
        assert runner.scheduler.deferred == {}
    finally:
        await runner.stop()


async def test_a_deferred_job_can_be_cancelled_and_leaves_nothing(tmp_path, store):
    runner = _runner(tmp_path, store, FlakyRegistry(failures=None), publish_retry_s=1.0)
    await runner.start()
    try:
        job = await runner.create(_request(SUCCEED, name=NAME))
        await _until(runner, job.job_id, JobState.INTERRUPTED)
        assert store.path(NAME).exists()
        assert (await runner.cancel(job.job_id)).state == JobState.CANCELLED
        assert not store.path(NAME).exists() and runner.workspace.finished_output(job.job_id) is None
        assert runner.scheduler.deferred == {}
        await asyncio.sleep(1.2)  # the timer that would have queued it again is gone
        assert runner.get(job.job_id).state == JobState.CANCELLED
    finally:
        await runner.stop()


async def test_a_refusal_by_the_registry_fails_the_job_and_removes_its_artifact(tmp_path, store):
    registry = FlakyRegistry(failures=0, refusal=InvalidArgumentError("model.params: not a known setting"))
    runner = _runner(tmp_path, store, registry)
    await runner.start()
    try:
        job = await runner.create(_request(SUCCEED, name=NAME))
        await _until(runner, job.job_id, JobState.SUCCEEDED, JobState.FAILED)
        failed = runner.get(job.job_id)
        assert failed.state == JobState.FAILED and registry.calls == 1
        assert failed.failure_message == f"could not register '{NAME}': model.params: not a known setting"
        assert not store.path(NAME).exists()
    finally:
        await runner.stop()


async def test_a_stop_while_waiting_for_the_registry_and_the_next_start_registers(tmp_path, store):
    runner = _runner(tmp_path, store, FlakyRegistry(failures=None), publish_retry_s=120.0)
    await runner.start()
    job = await runner.create(_request(SUCCEED, name=NAME))
    await _logged(runner, job.job_id, "registry unreachable, retrying in")
    started = time.monotonic()
    await runner.stop()
    assert time.monotonic() - started < 2.0  # the pause between retries ends at once
    healthy = FlakyRegistry(failures=0)
    again = _runner(tmp_path, store, healthy)
    await again.start()
    try:
        stopped = [e for e in _events(again, job.job_id) if isinstance(e.payload, StateChange)][-1].payload
        assert stopped.state == JobState.INTERRUPTED
        assert stopped.message.startswith(f"the fine-tuning service was shut down while registering '{NAME}'")
        await _until(again, job.job_id, JobState.SUCCEEDED)
        assert set(healthy.registered) == {NAME} and again.get(job.job_id).registered_model_name == NAME
    finally:
        await again.stop()
