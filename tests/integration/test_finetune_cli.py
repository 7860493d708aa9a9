"""`aisemble finetune create ... --watch` through the gateway: uploads the file, creates the job, draws a live
tqdm progress bar from the job's events, and exits 0 once the model is registered."""

from __future__ import annotations

import asyncio
import re

import pytest

from aisemble.finetune.v1 import finetune_service_pb2 as pb
from entrypoints.cli import main
from tests.integration.test_finetune_errors import DATASET, start_mesh

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """`main()` configures logging as the command does (its own handler on the stderr pytest is capturing, in
    place of pytest's): the root logger gets its handlers and level back afterwards, or later tests' log lines
    go to a closed stream."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


async def test_create_with_watch_shows_a_progress_bar(start_server, tmp_path, registry, store, capsys):
    mesh = await start_mesh(start_server, tmp_path, registry, store)
    small = tmp_path / "small.jsonl"
    small.write_text("".join(DATASET.read_text(encoding="utf-8").splitlines(keepends=True)[:120]), encoding="utf-8")
    address = f"127.0.0.1:{mesh.gateway.port}"
    argv = [
        "finetune",
        "create",
        "--address",
        address,
        "--base",
        "minilm-l6",
        "--task",
        "text-classification",
        "--file",
        str(small),
        "--name",
        "cli-classifier",
        "--epochs",
        "3",
        "--unfrozen-layers",
        "0",
        "--watch",
    ]
    code = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    job_id = out.strip().splitlines()[0]
    assert job_id.startswith("ftjob-")
    assert "uploaded" in err and "120 examples" in err
    # tqdm's bar: a percentage, the bar, steps done/total, and the epoch/loss postfix.
    assert re.search(r"100%\|[^|]+\| (\d+)/\1 ", err), err[-2000:]
    assert re.search(r"epoch=3/3, loss=\d\.\d{4}", err)
    assert "epoch 3: validation loss" in err and "[SUCCEEDED]: model 'cli-classifier' is ready" in err
    job = (await mesh.jobs.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=job_id))).job
    assert job.registered_model_name == "cli-classifier"

    code = await asyncio.to_thread(main, ["finetune", "list", "--address", address])
    out, _err = capsys.readouterr()
    assert code == 0 and job_id in out and "SUCCEEDED" in out
    code = await asyncio.to_thread(main, ["finetune", "cancel", job_id, "--address", address])
    _out, err = capsys.readouterr()
    assert code == 1 and "FAILED_PRECONDITION" in err
