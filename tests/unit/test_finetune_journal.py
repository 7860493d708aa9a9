"""The job journal: jobs and their numbered events persist in SQLite, across reopening."""

from __future__ import annotations

import pytest

from services.finetune.journal import JobJournal
from services.finetune.types import (
    Evaluation,
    Hyperparameters,
    Job,
    JobState,
    LogLine,
    LogSeverity,
    Metrics,
    Progress,
    StateChange,
    Task,
    TrainingFile,
)


def _job(job_id: str, created_at: float, state: JobState = JobState.QUEUED) -> Job:
    return Job(
        job_id=job_id,
        state=state,
        base_model="minilm-l6",
        task=Task.TEXT_CLASSIFICATION,
        result_model_name=f"result-{job_id}",
        hyperparameters=Hyperparameters(
            learning_rate=0.02, epochs=2, batch_size=4, max_length=64, seed=0, unfrozen_layers=1
        ),
        data_sha256="ab" * 32,
        training_example_count=9,
        validation_example_count=1,
        created_at=created_at,
        labels=("a", "b"),
    )


@pytest.fixture
def journal(tmp_path):
    journal = JobJournal(tmp_path / "jobs.db")
    yield journal
    journal.close()


def test_a_job_and_its_events_survive_reopening(tmp_path, journal):
    job = _job("j1", 1.0)
    [queued] = journal.save(job, StateChange(None, JobState.QUEUED, "queued"), new=True)
    job.state = JobState.RUNNING
    job.progress = Progress(step=3, total_steps=10, epoch=1, total_epochs=2, eta_s=7.0, train_loss=0.5)
    job.metrics = Metrics(step=3, train_loss=0.5, validation_loss=0.7, validation_accuracy=0.75)
    events = journal.save(
        job,
        StateChange(JobState.QUEUED, JobState.RUNNING, "started"),
        job.progress,
        Evaluation(step=3, epoch=1, validation_loss=0.7, validation_accuracy=0.75),
        LogLine(LogSeverity.WARNING, "careful"),
    )
    assert [queued.sequence, *(e.sequence for e in events)] == [1, 2, 3, 4, 5]
    journal.close()
    reopened = JobJournal(tmp_path / "jobs.db")
    try:
        assert reopened.job("j1") == job
        replay = reopened.events("j1")
        assert [e.payload for e in replay] == [queued.payload, *(e.payload for e in events)]
        assert [e.sequence for e in reopened.events("j1", after=3)] == [4, 5]
        assert reopened.events("j1")[0].payload == StateChange(None, JobState.QUEUED, "queued")
    finally:
        reopened.close()


def test_listing_is_newest_first_filtered_and_paged(journal):
    for index, state in enumerate((JobState.SUCCEEDED, JobState.QUEUED, JobState.RUNNING, JobState.QUEUED)):
        journal.save(_job(f"j{index}", float(index), state), new=True)
    assert [j.job_id for j in journal.jobs()] == ["j3", "j2", "j1", "j0"]
    assert [j.job_id for j in journal.jobs(JobState.QUEUED)] == ["j3", "j1"]
    assert [j.job_id for j in journal.jobs(offset=1, limit=2)] == ["j2", "j1"]
    assert [j.job_id for j in journal.unfinished()] == ["j1", "j2", "j3"]
    assert journal.names_in_use() == {"result-j1", "result-j2", "result-j3"}
    assert journal.job("nope") is None


def test_a_failed_write_changes_nothing(journal):
    job = _job("j1", 1.0)
    journal.save(job, new=True)
    with pytest.raises(Exception, match="UNIQUE"):
        journal.save(_job("j1", 2.0), StateChange(None, JobState.QUEUED), new=True)
    assert journal.events("j1") == [] and journal.job("j1").created_at == 1.0


def test_files(journal):
    file = TrainingFile("file-1", "a.jsonl", 10, "cd" * 32, 2, Task.CAUSAL_LM, 5.0)
    journal.add_file(file)
    assert journal.file("file-1") == file and journal.file("file-2") is None
