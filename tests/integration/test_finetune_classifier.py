"""The domain classifier: MiniLM fine-tuned on the shipped dataset through a real fine-tuning service, registered
as `domain-classifier`, served by the NLP service through the gateway and used as the learned router.

Held-out accuracy is measured on data/domain_classification_heldout.jsonl (texts never trained on), overall
and per language, through the gateway's Classify.
"""

from __future__ import annotations

import json
import time

import grpc
import pytest

from aisemble.common.v1 import common_pb2
from aisemble.finetune.v1 import finetune_service_pb2 as pb
from aisemble.nlp.v1 import nlp_service_pb2, nlp_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from tests.conftest import status_details
from tests.integration.test_finetune_errors import DATASET, HELD_OUT, _upload, start_mesh, states, until, watch_all

pytestmark = pytest.mark.slow

NAME = "domain-classifier"
LABELS = ["code", "creative", "financial", "general", "legal", "medical"]


async def test_the_domain_classifier_is_trained_registered_and_served(
    start_server, tmp_path, registry, store, record_property
):
    mesh = await start_mesh(start_server, tmp_path, registry, store, nlp=True)
    data = DATASET.read_bytes()
    upload = await mesh.jobs.UploadTrainingFile(iter(_upload(data, chunk=16 * 1024, size_bytes=len(data))))
    assert upload.file.example_count == 1138

    started = time.monotonic()
    created = await mesh.jobs.CreateFineTuneJob(
        pb.CreateFineTuneJobRequest(
            base_model="minilm-l6",
            task=pb.FINE_TUNE_TASK_TEXT_CLASSIFICATION,
            training_file_id=upload.file.file_id,
            result_model_name=NAME,
        )
    )
    job = created.job
    assert job.state == pb.FINE_TUNE_JOB_STATE_QUEUED and job.result_model_name == NAME
    assert (job.training_example_count, job.validation_example_count) == (1026, 112)
    assert job.hyperparameters.unfrozen_layers == 1 and not job.hyperparameters.HasField("lora_rank")
    assert job.data_sha256 == upload.file.sha256

    events = await watch_all(mesh.jobs, job.job_id)
    seconds = time.monotonic() - started
    assert states(events) == ["QUEUED", "RUNNING", "SUCCEEDED"], [e for e in events if e.HasField("log")]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    progress = [e.progress for e in events if e.HasField("progress")]
    assert [p.step for p in progress] == sorted({p.step for p in progress}) and progress[-1].step == progress[
        -1
    ].total_steps
    assert progress[-1].epoch == 10 and progress[0].HasField("eta") and progress[0].HasField("train_loss")
    evaluations = [e.evaluation for e in events if e.HasField("evaluation")]
    assert len(evaluations) == 10 and evaluations[-1].validation_accuracy >= 0.8
    assert evaluations[-1].validation_loss < evaluations[0].validation_loss

    done = (await mesh.jobs.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=job.job_id))).job
    assert done.state == pb.FINE_TUNE_JOB_STATE_SUCCEEDED and done.registered_model_name == NAME
    assert done.metrics.validation_accuracy == pytest.approx(evaluations[-1].validation_accuracy)
    assert done.HasField("finished_at") and done.progress.fraction == 1.0
    listed = (await mesh.jobs.ListFineTuneJobs(pb.ListFineTuneJobsRequest(state=pb.FINE_TUNE_JOB_STATE_SUCCEEDED))).jobs
    assert [j.job_id for j in listed] == [job.job_id]

    # Registered with its lineage; the artifact is complete in the store; the job's scratch files are gone.
    model = (await mesh.registry.GetModel(rpb.GetModelRequest(name=NAME))).model
    assert model.task == common_pb2.TASK_TEXT_CLASSIFICATION and model.provider == "onnxruntime"
    assert (model.lineage.base_model, model.lineage.job_id) == ("minilm-l6", job.job_id)
    assert model.lineage.data_sha256 == upload.file.sha256
    assert model.lineage.metrics["validation_accuracy"] == pytest.approx(done.metrics.validation_accuracy)
    assert mesh.store.verify(NAME, deep=True).ok
    manifest = mesh.store.manifest(NAME)
    assert set(manifest.files) == {"model.onnx", "tokenizer.json"} and manifest.info["labels"] == LABELS
    assert manifest.info["token_bag_expert"] and manifest.info["max_logit_diff_vs_torch"] < 1e-3

    async def scratch_deleted() -> bool:  # just after the job is recorded SUCCEEDED
        return not (mesh.data_dir / "jobs" / job.job_id / "output").exists()

    await until(scratch_deleted, seconds=10)

    # Served at once by the NLP service, through the gateway.
    await until(lambda: _serving(mesh), seconds=60)
    rows = [json.loads(line) for line in HELD_OUT.read_text(encoding="utf-8").splitlines()]
    classify = nlp_service_pb2_grpc.NlpServiceStub(mesh.channel)
    reply = await classify.Classify(nlp_service_pb2.ClassifyRequest(model=NAME, texts=[r["text"] for r in rows]))
    assert reply.selection.model == NAME
    predicted = [result.labels[0].label for result in reply.results]
    accuracy = {}
    for language in ("en", "ja", None):
        pairs = [(r["label"], p) for r, p in zip(rows, predicted, strict=True) if language in (None, r["lang"])]
        accuracy[language or "all"] = sum(label == p for label, p in pairs) / len(pairs)
    record_property("held_out_accuracy", accuracy)
    record_property("job_seconds", round(seconds, 1))
    print(f"domain-classifier held-out accuracy {accuracy}; job took {seconds:.1f} s")
    assert accuracy["all"] >= 0.85, accuracy
    assert accuracy["en"] >= 0.85 and accuracy["ja"] >= 0.75, accuracy

    # The gateway's automatic selection uses it as the learned router (configs/selection.yaml names it).
    for text, domain in (("患者は高い熱とせきが続いている", "medical"), ("The court dismissed the appeal", "legal")):
        features = await mesh.gateway.gateway.resolver.features("text-generation", text, 16)
        assert features.domain == domain and features.domain_source.startswith(f"learned router {NAME}"), features

    # A finished job cannot be cancelled.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.jobs.CancelFineTuneJob(pb.CancelFineTuneJobRequest(job_id=job.job_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert status_details(caught.value)[1]["ErrorInfo"].reason == "JOB_FINISHED"


async def _serving(mesh) -> bool:
    return mesh.gateway.gateway.router.health_of(NAME) == "SERVING"
