"""Cancelling and restarting real jobs: a cancelled job's worker stops at once and leaves nothing behind; a
job survives its service being killed (SIGKILL) and then shut down, resuming each time from its last
checkpoint, and finishes and registers its model; a job that finishes while the gateway (the registry) is
down keeps its model and registers it once the gateway is back, without training again."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest

from aisemble.finetune.v1 import finetune_service_pb2 as pb
from aisemble.finetune.v1 import finetune_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from services.finetune.app import build_server as build_finetune
from services.finetune.runner import FineTuneLimits
from tests.integration.conftest import build_gateway, mesh_for
from tests.integration.test_finetune_errors import (
    classification_examples,
    free_ports,
    scratch_store,
    start_mesh,
    states,
    tiny_classifier_job,
    until,
    watch_all,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
_PID = re.compile(r"\(pid (\d+)\)")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _request(name: str, epochs: int, unfrozen: int = 0) -> pb.CreateFineTuneJobRequest:
    return pb.CreateFineTuneJobRequest(
        base_model="minilm-l6",
        task=pb.FINE_TUNE_TASK_TEXT_CLASSIFICATION,
        examples=pb.InlineExamples(classification_examples=classification_examples()),
        hyperparameters=pb.Hyperparameters(epochs=epochs, unfrozen_layers=unfrozen),
        result_model_name=name,
    )


async def _job(mesh, job_id: str) -> pb.FineTuneJob:
    """The job, waiting (up to 30 s) while the gateway reconnects to a restarted service."""
    for _ in range(300):
        try:
            return (await mesh.jobs.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=job_id))).job
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("the fine-tuning service did not come back")


async def _worker_pid(mesh, job_id: str, after: int = 0) -> int:
    """The pid of the job's current worker, from its 'worker ready' log line."""
    async for reply in mesh.jobs.WatchFineTuneJob(pb.WatchFineTuneJobRequest(job_id=job_id, after_sequence=after)):
        match = _PID.search(reply.event.log.message) if reply.event.HasField("log") else None
        if match:
            return int(match.group(1))
    raise AssertionError("the job ended before its worker was ready")


async def test_cancel_stops_the_worker_promptly_and_leaves_nothing(start_server, tmp_path, registry, store):
    mesh = await start_mesh(start_server, tmp_path, registry, store, limits=FineTuneLimits(checkpoint_interval_s=1.0))
    job = (await mesh.jobs.CreateFineTuneJob(_request("cancelled-classifier", epochs=50, unfrozen=1))).job
    pid = await _worker_pid(mesh, job.job_id)

    async def checkpointed() -> bool:
        return (await _job(mesh, job.job_id)).checkpoint_step > 0

    await until(checkpointed, seconds=90)
    started = time.monotonic()
    cancelled = (await mesh.jobs.CancelFineTuneJob(pb.CancelFineTuneJobRequest(job_id=job.job_id))).job
    seconds = time.monotonic() - started
    assert cancelled.state == pb.FINE_TUNE_JOB_STATE_CANCELLED and seconds < 5, seconds
    assert _gone(pid), "the worker process is still running"
    events = await watch_all(mesh.jobs, job.job_id)
    assert states(events) == ["QUEUED", "RUNNING", "CANCELLED"]
    assert events[-1].state_change.message == "cancelled while running"
    # No artifact, no registration, no checkpoint or partial output left.
    assert not mesh.store.path("cancelled-classifier").exists()
    assert not list(mesh.store.root.glob(".tmp-*"))
    folder = mesh.data_dir / "jobs" / job.job_id
    assert sorted(p.name for p in folder.iterdir()) == ["train.jsonl", "validation.jsonl", "worker.lock"]
    listed = await mesh.registry.ListModels(rpb.ListModelsRequest())
    assert "cancelled-classifier" not in {m.name for m in listed.models}
    # Cancelling again returns it unchanged; its name is free again.
    again = (await mesh.jobs.CancelFineTuneJob(pb.CancelFineTuneJobRequest(job_id=job.job_id))).job
    assert again.state == pb.FINE_TUNE_JOB_STATE_CANCELLED and again.finished_at == cancelled.finished_at


_SERVICE = """
import asyncio, sys
from pathlib import Path
from aisemble.rpc.server import ServerConfig
from aisemble.store.model_store import ModelStore
from services.finetune.app import build_server
from services.finetune.runner import FineTuneLimits

async def main():
    address, data_dir, store, registry = sys.argv[1:5]
    server = build_server(
        ServerConfig(name="finetune", address=address), None, {}, data_dir=Path(data_dir),
        store=ModelStore(store), registry_target=registry,
        limits=FineTuneLimits(checkpoint_interval_s=1.0),
    )
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_job_survives_a_killed_and_a_restarted_service(start_server, tmp_path, registry, store):
    trained = scratch_store(store, tmp_path)
    data_dir = tmp_path / "finetune"
    port, gateway_port = free_ports(2)
    address, gateway_address = f"127.0.0.1:{port}", f"127.0.0.1:{gateway_port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SERVICE,
        address,
        str(data_dir),
        str(trained.root),
        gateway_address,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        assert (await asyncio.wait_for(process.stdout.readline(), 120)).strip() == b"ready"
        mesh = await start_mesh(
            start_server, tmp_path, registry, store, finetune_address=address, gateway_address=gateway_address
        )
        job = (await mesh.jobs.CreateFineTuneJob(_request("resumed-classifier", epochs=6))).job
        first_pid = await _worker_pid(mesh, job.job_id)

        async def checkpointed(at_least: int) -> bool:
            return (await _job(mesh, job.job_id)).checkpoint_step >= at_least

        await until(lambda: checkpointed(60), seconds=120)
        process.send_signal(signal.SIGKILL)  # the service dies; its worker must notice and exit by itself
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    async def orphan_gone() -> bool:
        return _gone(first_pid)

    await until(orphan_gone, seconds=15)

    def service() -> object:
        return build_finetune(
            ServerConfig(name="finetune", address=address),
            None,
            {},
            data_dir=data_dir,
            store=trained,
            registry_target=gateway_address,
            limits=FineTuneLimits(checkpoint_interval_s=1.0),
        )

    # Restarted: the job is INTERRUPTED (killed), queued again and resumed from its checkpoint.
    second = service()
    await start_server(second)
    interrupted = await _job(mesh, job.job_id)
    killed_at = interrupted.checkpoint_step
    assert killed_at >= 60 and interrupted.state in (
        pb.FINE_TUNE_JOB_STATE_INTERRUPTED,
        pb.FINE_TUNE_JOB_STATE_RUNNING,
    )
    await until(lambda: checkpointed(killed_at + 60), seconds=120)
    # Shut down gracefully mid-job: INTERRUPTED again, then resumed by the next start.
    await second.stop(grace_s=0.5)
    third = service()
    await start_server(third)
    await _job(mesh, job.job_id)  # the gateway has reconnected
    events = await watch_all(mesh.jobs, job.job_id)
    assert states(events) == ["QUEUED", "RUNNING", "INTERRUPTED", "RUNNING", "INTERRUPTED", "RUNNING", "SUCCEEDED"]
    changes = [e.state_change for e in events if e.HasField("state_change")]
    assert "killed or crashed" in changes[2].message and f"step {killed_at}" in changes[2].message
    assert changes[4].message.startswith("the fine-tuning service was shut down")
    second_at = int(re.search(r"step (\d+)", changes[4].message).group(1))
    assert second_at > killed_at
    # Each resumed worker continued from the checkpoint: its first step is the one after it.
    for change_index, checkpoint in ((3, killed_at), (5, second_at)):
        start = next(
            i for i, e in enumerate(events) if e.HasField("state_change") and e.state_change == changes[change_index]
        )
        resumed = [e for e in events[start:] if e.HasField("log") and e.log.message.startswith("resumed from")]
        assert resumed and resumed[0].log.message.startswith(f"resumed from the checkpoint of step {checkpoint} ")
        steps = [e.progress.step for e in events[start:] if e.HasField("progress")]
        assert checkpoint < steps[0] <= checkpoint + 40, (checkpoint, steps[:3])

    done = await _job(mesh, job.job_id)
    assert done.state == pb.FINE_TUNE_JOB_STATE_SUCCEEDED and done.registered_model_name == "resumed-classifier"
    model = (await mesh.registry.GetModel(rpb.GetModelRequest(name="resumed-classifier"))).model
    assert model.lineage.job_id == job.job_id


async def test_a_registry_outage_while_publishing_keeps_the_artifact_and_registers_it_later(
    start_server, tmp_path, registry, store
):
    limits = FineTuneLimits(checkpoint_interval_s=5.0, publish_retry_s=3.0, publish_retry_max_delay_s=1.0)
    mesh = await start_mesh(start_server, tmp_path, registry, store, limits=limits)
    job = (await mesh.jobs.CreateFineTuneJob(tiny_classifier_job("outage-classifier"))).job
    gateway_address = f"127.0.0.1:{mesh.gateway.port}"
    await mesh.gateway.stop(grace_s=0.5)  # the registry is gone before the job has trained (a worker takes seconds)

    direct = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.finetune.port}")
    try:
        jobs = finetune_service_pb2_grpc.FineTuneServiceStub(direct)
        events: list[pb.FineTuneEvent] = []

        async def until_interrupted() -> None:
            async for reply in jobs.WatchFineTuneJob(pb.WatchFineTuneJobRequest(job_id=job.job_id)):
                events.append(reply.event)
                if reply.event.state_change.state == pb.FINE_TUNE_JOB_STATE_INTERRUPTED:
                    return

        await asyncio.wait_for(until_interrupted(), 90)
        assert states(events) == ["QUEUED", "RUNNING", "INTERRUPTED"]
        retries = [e.log.message for e in events if e.log.message.startswith("registry unreachable")]
        assert retries and retries[0].startswith("registry unreachable, retrying in 1 s (")
        assert "stayed unreachable for 3 s" in events[-1].state_change.message
        # The trained model is kept, complete, in the store; the job is not failed.
        assert mesh.store.verify("outage-classifier", deep=True).ok
        assert mesh.store.manifest("outage-classifier").info["job_id"] == job.job_id
        waiting = (await jobs.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=job.job_id))).job
        assert waiting.state == pb.FINE_TUNE_JOB_STATE_INTERRUPTED and not waiting.registered_model_name

        # The gateway comes back on the same port (its registry file as it was): the next attempt registers.
        gateway = build_gateway(
            ServerConfig(name="gateway", address=gateway_address),
            mesh_for(finetune=[f"127.0.0.1:{mesh.finetune.port}"]),
            registry_path=tmp_path / "models.yaml",
            store_root=mesh.store.root,
        )
        channel = await start_server(gateway, admin=True)
        later = await asyncio.wait_for(watch_all(jobs, job.job_id, after=events[-1].sequence), 60)
        assert states(later) == ["RUNNING", "SUCCEEDED"]
        assert later[0].state_change.message == "resuming: training had finished; publishing the result"
        assert not [e for e in later if e.HasField("progress")]  # not trained again
        model = (
            await registry_service_pb2_grpc.ModelRegistryServiceStub(channel).GetModel(
                rpb.GetModelRequest(name="outage-classifier")
            )
        ).model
        assert model.lineage.job_id == job.job_id
        done = (await jobs.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=job.job_id))).job
        assert done.registered_model_name == "outage-classifier"
    finally:
        await direct.close()
