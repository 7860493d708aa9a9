"""Watching jobs: nothing per job stays in memory once its watchers are gone, however many jobs there were."""

from __future__ import annotations

import asyncio
import time

from services.finetune.tracker import EVENT_PAGE, JobTracker
from services.finetune.types import Hyperparameters, Job, JobState, LogLine, LogSeverity, Task


def _job(number: int) -> Job:
    return Job(
        job_id=f"ftjob-{number:05d}",
        state=JobState.QUEUED,
        base_model="minilm-l6",
        task=Task.TEXT_CLASSIFICATION,
        result_model_name=f"result-{number}",
        hyperparameters=Hyperparameters(learning_rate=0.02, epochs=1, batch_size=4, max_length=64, seed=0),
        data_sha256="ab" * 32,
        training_example_count=2,
        validation_example_count=0,
        created_at=time.time(),
    )


async def _collect(tracker: JobTracker, job_id: str, after: int = 0) -> list[int]:
    return [event.sequence async for event in tracker.watch(job_id, after)]


async def test_the_per_job_tables_stay_bounded_after_many_jobs(tmp_path):
    tracker = JobTracker()
    tracker.open(tmp_path / "finetune.db")
    try:
        for number in range(300):
            job = _job(number)
            tracker.record(job, new=True)
            finishing = asyncio.create_task(_collect(tracker, job.job_id))  # watches until the job ends
            leaving = asyncio.create_task(_collect(tracker, job.job_id))  # its client goes away
            await asyncio.sleep(0)
            assert tracker.watched == 1
            tracker.transition(job, JobState.RUNNING)
            await asyncio.sleep(0)
            leaving.cancel()
            tracker.log(job, LogSeverity.INFO, "half way")
            tracker.transition(job, JobState.SUCCEEDED if number % 2 else JobState.FAILED, "done")
            assert await finishing == [1, 2, 3]  # running, the log line, the end
            assert await _collect(tracker, job.job_id, after=3) == []  # a terminal job: nothing more, at once
            await asyncio.gather(leaving, return_exceptions=True)
            assert tracker.watched == 0 and tracker._signals == {}
        # A watcher still waiting on a live job holds one entry, dropped when it leaves.
        live = _job(1000)
        tracker.record(live, new=True)
        waiting = asyncio.create_task(_collect(tracker, live.job_id))
        await asyncio.sleep(0)
        assert tracker.watched == 1 and set(tracker._signals) == {live.job_id}
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert tracker.watched == 0 and tracker._signals == {} and tracker._watchers == {}
    finally:
        tracker.close()


async def test_a_late_watcher_pages_through_a_long_history(tmp_path):
    tracker = JobTracker()
    tracker.open(tmp_path / "finetune.db")
    try:
        job = _job(1)
        tracker.record(job, new=True)
        count = EVENT_PAGE * 2 + 5
        tracker.record(job, *[LogLine(LogSeverity.INFO, f"line {i}") for i in range(count)])
        pages: list[int] = []
        read = tracker.journal.events

        def spy(job_id: str, after: int = 0, limit: int | None = None) -> list:
            events = read(job_id, after, limit)
            pages.append(len(events))
            return events

        tracker.journal.events = spy  # type: ignore[method-assign]
        watcher = asyncio.create_task(_collect(tracker, job.job_id))
        await asyncio.sleep(0.05)
        tracker.transition(job, JobState.CANCELLED, "cancelled")
        sequences = await watcher
        assert sequences == list(range(1, count + 2))
        assert max(pages) == EVENT_PAGE  # never more than a page in memory
    finally:
        tracker.close()
