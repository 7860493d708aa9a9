"""Bad input to the fine-tuning service, through the gateway: each refused with its status and details.

Also the helpers the other fine-tuning tests share: a gateway, the fine-tuning service and (when
asked) the NLP and LLM services that follow the registry, all in-process on free ports, over a
temporary model store (the base artifacts linked in) and a temporary registry file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from aisemble.finetune.v1 import finetune_service_pb2 as pb
from aisemble.finetune.v1 import finetune_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.server import AisembleServer, ServerConfig
from aisemble.store.model_store import ModelStore
from services.finetune.app import build_server as build_finetune
from services.finetune.runner import FineTuneLimits
from tests.conftest import status_details
from tests.integration.conftest import build_gateway, mesh_for, write_registry

#: Base artifacts linked into the temporary store.
BASE_ARTIFACTS = ("minilm-l6", "smollm2-135m-instruct", "langid")
#: Registry entries of the temporary registry.
BASE_MODELS = ("minilm-l6", "smollm2-135m", "langid")
REPO = Path(__file__).resolve().parents[2]
DATASET = REPO / "data" / "domain_classification.jsonl"
HELD_OUT = REPO / "data" / "domain_classification_heldout.jsonl"


def free_ports(count: int) -> list[int]:
    """Distinct ports nobody listens on now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system: a copy
        shutil.copy2(source, target)


def linked_store(real: ModelStore, root: Path) -> ModelStore:
    """A model store in root whose base artifacts are hard links to the real store's files (results land in
    root). Not symbolic links: the registry refuses entries whose files resolve outside their store."""
    root.mkdir(parents=True, exist_ok=True)
    for name in BASE_ARTIFACTS:
        shutil.copytree(real.path(name), root / name, copy_function=_link_or_copy)
    return ModelStore(root)


def scratch_store(real: ModelStore, tmp_path: Path) -> ModelStore:
    """The test's model store in tmp_path/store (created with links to the base artifacts the first time)."""
    root = tmp_path / "store"
    return ModelStore(root) if root.exists() else linked_store(real, root)


@dataclass
class Mesh:
    """A gateway with the fine-tuning service (and optionally NLP / LLM) behind it."""

    gateway: Any
    finetune: Any
    store: ModelStore
    data_dir: Path
    channel: grpc.aio.Channel
    nlp: AisembleServer | None = None
    llm: AisembleServer | None = None

    @property
    def jobs(self) -> finetune_service_pb2_grpc.FineTuneServiceStub:
        """FineTuneService through the gateway."""
        return finetune_service_pb2_grpc.FineTuneServiceStub(self.channel)

    @property
    def registry(self) -> registry_service_pb2_grpc.ModelRegistryServiceStub:
        """The gateway's registry."""
        return registry_service_pb2_grpc.ModelRegistryServiceStub(self.channel)


def build_model_service(module: Any, service: str, store: ModelStore, target: str) -> AisembleServer:
    """An NLP or LLM server with no preloaded model that loads what the registry adds (it follows target)."""
    return module.build_server(ServerConfig(name=service), None, {}, store=store, registry_target=target)


async def start_mesh(
    start_server: Any,
    tmp_path: Path,
    registry: Any,
    store: ModelStore,
    *,
    nlp: bool = False,
    llm: bool = False,
    limits: FineTuneLimits | None = None,
    data_dir: Path | None = None,
    finetune_address: str | None = None,
    gateway_address: str | None = None,
) -> Mesh:
    """Gateway + fine-tuning service (+ NLP / LLM) on free ports; finetune_address: one started elsewhere."""
    from services.llm import app as llm_app
    from services.nlp import app as nlp_app

    trained = scratch_store(store, tmp_path)
    gateway_address = gateway_address or f"127.0.0.1:{free_ports(1)[0]}"
    services: dict[str, list[str]] = {}
    nlp_server = llm_server = None
    if nlp:
        nlp_server = build_model_service(nlp_app, "nlp", trained, gateway_address)
        await start_server(nlp_server)
        services["nlp"] = [f"127.0.0.1:{nlp_server.port}"]
    if llm:
        llm_server = build_model_service(llm_app, "llm", trained, gateway_address)
        await start_server(llm_server)
        services["llm"] = [f"127.0.0.1:{llm_server.port}"]
    data_dir = data_dir or tmp_path / "finetune"
    finetune = None
    if finetune_address is None:
        finetune = build_finetune(
            ServerConfig(name="finetune"),
            None,
            {},
            data_dir=data_dir,
            store=trained,
            registry_target=gateway_address,
            limits=limits or FineTuneLimits(checkpoint_interval_s=5.0),
        )
        await start_server(finetune)
        finetune_address = f"127.0.0.1:{finetune.port}"
    services["finetune"] = [finetune_address]
    path = tmp_path / "models.yaml"
    if not path.exists():
        write_registry(path, registry, BASE_MODELS)
    gateway = build_gateway(
        ServerConfig(name="gateway", address=gateway_address),
        mesh_for(**services),
        registry_path=path,
        store_root=trained.root,
    )
    channel = await start_server(gateway, admin=True)  # creating and cancelling jobs are admin RPCs
    return Mesh(gateway, finetune, trained, data_dir, channel, nlp_server, llm_server)


async def until(predicate: Any, seconds: float = 60.0, every: float = 0.1) -> None:
    """Poll an async predicate until it is true."""
    for _ in range(int(seconds / every)):
        if await predicate():
            return
        await asyncio.sleep(every)
    raise AssertionError("condition not reached in time")


def classification_examples(path: Path = DATASET, limit: int | None = None) -> list[pb.ClassificationExample]:
    """The shipped dataset's examples (the first `limit`)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][:limit]
    return [pb.ClassificationExample(text=r["text"], label=r["label"]) for r in rows]


async def watch_all(stub: Any, job_id: str, after: int = 0) -> list[pb.FineTuneEvent]:
    """Every event of a job until its terminal state."""
    return [
        r.event async for r in stub.WatchFineTuneJob(pb.WatchFineTuneJobRequest(job_id=job_id, after_sequence=after))
    ]


def states(events: list[pb.FineTuneEvent]) -> list[str]:
    """The state changes among events, as state names."""
    return [
        pb.FineTuneJobState.Name(e.state_change.state).removeprefix("FINE_TUNE_JOB_STATE_")
        for e in events
        if e.WhichOneof("kind") == "state_change"
    ]


# --- the tests -----------------------------------------------------------------------------------------

CLASSIFY = pb.FINE_TUNE_TASK_TEXT_CLASSIFICATION
CAUSAL = pb.FINE_TUNE_TASK_CAUSAL_LM
TWO_LABELS = [
    pb.ClassificationExample(text="the court ruled", label="legal"),
    pb.ClassificationExample(text="a fever", label="medical"),
]


def tiny_classifier_job(result_model_name: str) -> pb.CreateFineTuneJobRequest:
    """The smallest real job: one epoch of four examples on MiniLM's head (its worker takes a few seconds)."""
    return pb.CreateFineTuneJobRequest(
        base_model="minilm-l6",
        task=pb.FINE_TUNE_TASK_TEXT_CLASSIFICATION,
        examples=pb.InlineExamples(classification_examples=TWO_LABELS * 2),
        validation_split=0.0,
        hyperparameters=pb.Hyperparameters(epochs=1, unfrozen_layers=0),
        result_model_name=result_model_name,
    )


@pytest.fixture
async def mesh(start_server, tmp_path, registry, store) -> Mesh:
    return await start_mesh(start_server, tmp_path, registry, store, limits=FineTuneLimits(max_upload_bytes=4096))


async def _refused(call: Any, code: grpc.StatusCode) -> tuple[grpc.aio.AioRpcError, dict[str, Any]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    _status, details = status_details(caught.value)
    return caught.value, details


def _create(**fields: Any) -> pb.CreateFineTuneJobRequest:
    values: dict[str, Any] = {"base_model": "minilm-l6", "task": CLASSIFY}
    values.update(fields)
    if "examples" not in values and "training_file_id" not in values:
        values["examples"] = pb.InlineExamples(classification_examples=TWO_LABELS)
    return pb.CreateFineTuneJobRequest(**values)


async def test_an_unknown_base_model_is_not_found(mesh):
    error, details = await _refused(
        mesh.jobs.CreateFineTuneJob(_create(base_model="no-such-model")), grpc.StatusCode.NOT_FOUND
    )
    assert details["ErrorInfo"].reason == "MODEL_NOT_FOUND" and "no-such-model" in error.details()


@pytest.mark.parametrize(("base", "task"), [("langid", CLASSIFY), ("minilm-l6", CAUSAL), ("smollm2-135m", CLASSIFY)])
async def test_a_base_model_of_the_wrong_task_is_a_failed_precondition(mesh, base, task):
    examples = (
        pb.InlineExamples(completion_examples=[pb.CompletionExample(prompt="a", response="b")])
        if task == CAUSAL
        else pb.InlineExamples(classification_examples=TWO_LABELS)
    )
    error, details = await _refused(
        mesh.jobs.CreateFineTuneJob(_create(base_model=base, task=task, examples=examples)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details["ErrorInfo"].reason == "MODEL_WRONG_TASK", error.details()


async def test_no_examples_is_invalid(mesh):
    error, details = await _refused(
        mesh.jobs.CreateFineTuneJob(_create(examples=pb.InlineExamples())), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details["BadRequest"].field_violations[0].field == "examples.classification_examples"
    assert "no examples" in error.details()
    request = pb.CreateFineTuneJobRequest(base_model="minilm-l6", task=CLASSIFY)
    error, details = await _refused(mesh.jobs.CreateFineTuneJob(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert details["BadRequest"].field_violations[0].field == "training_data"


async def test_examples_with_missing_fields_name_each_example(mesh):
    examples = [*TWO_LABELS, pb.ClassificationExample(text="no label"), pb.ClassificationExample(label="legal")]
    _error, details = await _refused(
        mesh.jobs.CreateFineTuneJob(_create(examples=pb.InlineExamples(classification_examples=examples))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    violations = {(v.field, v.description) for v in details["BadRequest"].field_violations}
    assert violations == {
        ("examples.classification_examples[2]", "'label' is required"),
        ("examples.classification_examples[3]", "'text' is required"),
    }
    causal = pb.InlineExamples(completion_examples=[pb.CompletionExample(prompt="only a prompt")])
    _error, details = await _refused(
        mesh.jobs.CreateFineTuneJob(_create(base_model="smollm2-135m", task=CAUSAL, examples=causal)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details["BadRequest"].field_violations[0].field == "examples.completion_examples[0]"


async def test_examples_of_the_other_task_are_invalid(mesh):
    causal = pb.InlineExamples(completion_examples=[pb.CompletionExample(prompt="a", response="b")])
    error, _details = await _refused(
        mesh.jobs.CreateFineTuneJob(_create(examples=causal)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "takes examples.classification_examples" in error.details()


async def test_a_label_set_of_one_class_is_invalid(mesh):
    examples = [pb.ClassificationExample(text=f"text {i}", label="legal") for i in range(5)]
    error, details = await _refused(
        mesh.jobs.CreateFineTuneJob(_create(examples=pb.InlineExamples(classification_examples=examples))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details["ErrorInfo"].reason == "ONE_LABEL" and "at least 2 labels" in error.details()


@pytest.mark.parametrize(
    ("field", "value"),
    [("learning_rate", 0.0), ("learning_rate", 10.0), ("epochs", 0), ("epochs", 10_000), ("batch_size", 0)],
)
async def test_hyperparameters_out_of_range_are_invalid(mesh, field, value):
    request = _create(hyperparameters=pb.Hyperparameters(**{field: value}))
    _error, details = await _refused(mesh.jobs.CreateFineTuneJob(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert [v.field for v in details["BadRequest"].field_violations] == [f"hyperparameters.{field}"]


async def test_hyperparameters_of_the_other_task_and_a_bad_split_are_invalid(mesh):
    request = _create(hyperparameters=pb.Hyperparameters(lora_rank=8, unfrozen_layers=7), validation_split=0.5)
    _error, details = await _refused(mesh.jobs.CreateFineTuneJob(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert [v.field for v in details["BadRequest"].field_violations] == ["validation_split"]
    request = _create(hyperparameters=pb.Hyperparameters(lora_rank=8, unfrozen_layers=7))
    _error, details = await _refused(mesh.jobs.CreateFineTuneJob(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert {v.field for v in details["BadRequest"].field_violations} == {
        "hyperparameters.lora_rank",
        "hyperparameters.unfrozen_layers",
    }


async def test_a_result_name_that_exists_is_already_exists(mesh):
    _error, details = await _refused(
        mesh.jobs.CreateFineTuneJob(_create(result_model_name="minilm-l6")), grpc.StatusCode.ALREADY_EXISTS
    )
    assert details["ErrorInfo"].reason == "MODEL_EXISTS"
    _error, details = await _refused(
        mesh.jobs.CreateFineTuneJob(_create(result_model_name="Not A Name")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details["BadRequest"].field_violations[0].field == "result_model_name"


async def test_an_unknown_job_is_not_found(mesh):
    for call in (
        mesh.jobs.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id="ftjob-nope")),
        mesh.jobs.CancelFineTuneJob(pb.CancelFineTuneJobRequest(job_id="ftjob-nope")),
        watch_all(mesh.jobs, "ftjob-nope"),
    ):
        _error, details = await _refused(call, grpc.StatusCode.NOT_FOUND)
        assert details["ErrorInfo"].reason == "JOB_NOT_FOUND"
    _error, details = await _refused(
        mesh.jobs.CreateFineTuneJob(_create(training_file_id="file-nope")), grpc.StatusCode.NOT_FOUND
    )
    assert details["ErrorInfo"].reason == "FILE_NOT_FOUND"


def _upload(data: bytes, task: int = CLASSIFY, chunk: int = 1000, **header: Any) -> list[pb.UploadTrainingFileRequest]:
    head = pb.TrainingFileHeader(filename="examples.jsonl", task=task, **header)
    return [pb.UploadTrainingFileRequest(header=head)] + [
        pb.UploadTrainingFileRequest(chunk=data[i : i + chunk]) for i in range(0, len(data), chunk)
    ]


async def test_an_upload_over_the_size_limit_is_refused(mesh):
    data = b"".join(
        json.dumps({"text": f"text number {i}", "label": "a" if i % 2 else "b"}).encode() + b"\n" for i in range(200)
    )
    assert len(data) > 4096
    # One chunk: the server refuses as soon as it has read past the limit, and a client still writing later chunks
    # then may see grpc.aio's own "Internal error from Core" in place of the server's status (a client-side race).
    _error, details = await _refused(
        mesh.jobs.UploadTrainingFile(iter(_upload(data, chunk=len(data)))), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details["ErrorInfo"].reason == "FILE_TOO_LARGE"
    _error, details = await _refused(
        mesh.jobs.UploadTrainingFile(iter(_upload(b"", size_bytes=10**9))), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details["BadRequest"].field_violations[0].field == "header.size_bytes"


async def test_an_upload_with_bad_lines_names_them(mesh):
    lines = [
        '{"text": "the court ruled", "label": "legal"}',
        '{"text": "a fever", "label": "medical"}',
        "",
        '{"text": "no label"}',
        "not json",
        '{"text": "fine", "label": 3}',
    ]
    data = "\n".join(lines).encode()
    error, details = await _refused(mesh.jobs.UploadTrainingFile(iter(_upload(data))), grpc.StatusCode.INVALID_ARGUMENT)
    descriptions = [v.description for v in details["BadRequest"].field_violations]
    assert descriptions[0] == "line 4: 'label' is required"
    assert descriptions[1].startswith("line 5: is not valid JSON")
    assert descriptions[2] == "line 6: 'label' must be a string (got int)"
    assert "line 4" in error.details()


async def test_an_upload_is_checked_against_its_header_and_usable(mesh):
    data = b'{"text": "the court ruled", "label": "legal"}\n{"text": "a fever", "label": "medical"}\n'
    _error, details = await _refused(
        mesh.jobs.UploadTrainingFile(iter(_upload(data, sha256="0" * 64))), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details["ErrorInfo"].reason == "CHECKSUM_MISMATCH"
    digest = hashlib.sha256(data).hexdigest()
    reply = await mesh.jobs.UploadTrainingFile(iter(_upload(data, chunk=7, sha256=digest, size_bytes=len(data))))
    assert reply.file.sha256 == digest and reply.file.example_count == 2 and reply.file.size_bytes == len(data)
    # A file of classification examples cannot feed a causal LM job.
    request = pb.CreateFineTuneJobRequest(base_model="smollm2-135m", task=CAUSAL, training_file_id=reply.file.file_id)
    _error, details = await _refused(mesh.jobs.CreateFineTuneJob(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert details["ErrorInfo"].reason == "FILE_WRONG_TASK"


async def test_list_with_a_bad_page_token_is_invalid(mesh):
    # 5,000 digits once reached int() (past Python's 4,300-digit limit: ValueError, so INTERNAL); "²" passes
    # str.isdigit() and fails int(); "١٢" passed both; 19 digits overflow SQLite's integers.
    for token in ("abc", "-1", "1.5", " 1", "²", "١٢", "9" * 19, "1" * 5000):
        error, details = await _refused(
            mesh.jobs.ListFineTuneJobs(pb.ListFineTuneJobsRequest(page_token=token)), grpc.StatusCode.INVALID_ARGUMENT
        )
        [violation] = details["BadRequest"].field_violations
        assert violation.field == "page_token" and "not a token this server issued" in violation.description, token
        assert len(error.details()) < 200  # the token is not echoed back
    reply = await mesh.jobs.ListFineTuneJobs(pb.ListFineTuneJobsRequest())
    assert list(reply.jobs) == [] and reply.next_page_token == ""
    far = await mesh.jobs.ListFineTuneJobs(pb.ListFineTuneJobsRequest(page_token="9" * 18))
    assert list(far.jobs) == [] and far.next_page_token == ""
