"""A classifier head trained here (MiniLM + linear head), exported to ONNX into a model store, served by name.

This is the artifact a fine-tuning job writes (see services/nlp/backends/onnx_encoder.py): one ONNX
graph taking input_ids / attention_mask / token_type_ids and returning logits, the tokenizer, and the
labels in the manifest's info.
"""

from __future__ import annotations

import json
import shutil
import warnings
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisemble.config.models import ModelSpec
from aisemble.nlp.v1 import nlp_service_pb2 as pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from aisemble.store.builder import PrepareAction, StoreBuilder
from aisemble.store.model_store import ModelStore
from aisemble.store.recipe import BuildContext, Recipe
from services.nlp.app import build_server
from tests.conftest import status_details

pytestmark = pytest.mark.slow

CLASSIFIER = "domain-clf"
LABELS = ["medical", "legal", "financial", "general"]
TRAINING = {
    "medical": [
        "The patient was admitted with chest pain",
        "The doctor prescribed antibiotics for the infection",
        "Symptoms include fever and a persistent cough",
        "The surgeon performed a knee operation",
        "Take this medication twice a day after meals",
    ],
    "legal": [
        "The court dismissed the lawsuit",
        "The contract was signed by both parties",
        "The defendant pleaded not guilty",
        "The judge issued an injunction against the company",
        "Our lawyer filed an appeal",
    ],
    "financial": [
        "The stock market fell sharply today",
        "The bank raised interest rates",
        "Quarterly revenue exceeded expectations",
        "Investors sold their bonds",
        "The company reported a net loss",
    ],
    "general": [
        "We went to the beach on Saturday",
        "My favourite colour is blue",
        "The cat is sleeping on the sofa",
        "I am cooking pasta for dinner",
        "It rained all afternoon",
    ],
}
HELD_OUT = {
    "The nurse checked the patient's blood pressure and heart rate": "medical",
    "The attorney argued the case before the supreme court": "legal",
    "Shares of the company rose after the earnings report": "financial",
    "The children played football in the garden": "general",
}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _train_and_export(base: Any, ctx: BuildContext) -> dict[str, Any]:
    """Recipe build: MiniLM (frozen) + mean pooling + a linear head trained a few steps; one ONNX graph."""
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    torch.manual_seed(0)
    shutil.copy(base / "tokenizer.json", ctx.out_dir / "tokenizer.json")
    tokenizer = Tokenizer.from_file(str(ctx.out_dir / "tokenizer.json"))
    encoder = AutoModel.from_pretrained(base / "hf", dtype=torch.float32).eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)

    class Classifier(torch.nn.Module):
        """Keyword arguments into the encoder (transformers 5 breaks on positional export arguments)."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(encoder.config.hidden_size, len(LABELS))

        def pooled(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.head(self.pooled(input_ids, attention_mask, token_type_ids) * 10.0)

    def feed(texts: list[str]) -> dict[str, np.ndarray]:
        encodings = tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    model = Classifier()
    texts = [text for label in LABELS for text in TRAINING[label]]
    targets = torch.tensor([LABELS.index(label) for label in LABELS for _ in TRAINING[label]])
    batch = {k: torch.from_numpy(v) for k, v in feed(texts).items()}
    with torch.no_grad():
        features = model.pooled(**batch)  # the encoder is frozen: pool once, train the head
    optimizer = torch.optim.Adam(model.head.parameters(), lr=0.02)
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.head(features * 10.0), targets)
        loss.backward()
        optimizer.step()
    model.eval()

    example = feed(["an example sentence for the export", "short"])
    onnx_path = ctx.out_dir / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            model,
            tuple(torch.from_numpy(example[k]) for k in INPUTS),
            str(onnx_path),
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in INPUTS}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    check = feed(list(HELD_OUT))
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in check.items()}).numpy()
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(["logits"], check)[0]
    return {
        "task": "text-classification",
        "labels": LABELS,
        "problem_type": "single_label_classification",
        "max_length": 256,
        "tokenizer": "tokenizer.json",
        "onnx": {"file": "model.onnx", "inputs": list(INPUTS), "output": "logits"},
        "base_model": "minilm-l6",
        "final_loss": float(loss.detach()),
        "max_logit_diff_vs_torch": float(np.abs(expected - got).max()),
    }


@pytest.fixture(scope="module")
def classifier_store(store, tmp_path_factory) -> ModelStore:
    """A temporary model store holding the trained classifier artifact (with its manifest)."""
    base = store.require("minilm-l6")
    recipe = Recipe(
        name=CLASSIFIER,
        version=1,
        build=lambda ctx: _train_and_export(base, ctx),
        tools=("torch", "transformers", "onnx"),
        description="test classifier: MiniLM-L6 + linear head over medical / legal / financial / general",
    )
    trained = StoreBuilder(tmp_path_factory.mktemp("store"), recipes={CLASSIFIER: recipe})
    [result] = trained.prepare([CLASSIFIER], progress=False)
    assert result.action == PrepareAction.BUILT, result.detail
    info = trained.manifest(CLASSIFIER).info
    assert info["final_loss"] < 0.5 and info["max_logit_diff_vs_torch"] < 1e-3, info
    return trained


@pytest.fixture
async def classifier(classifier_store, start_server):
    spec = ModelSpec(
        name=CLASSIFIER,
        task="text-classification",
        provider="onnxruntime",
        service="nlp",
        model_path=CLASSIFIER,
        max_tokens=256,
        domains=("medical", "legal", "financial", "general"),
        params={"max_batch_size": 16},
    )
    server = build_server(ServerConfig(name="nlp-clf"), None, {CLASSIFIER: spec}, store=classifier_store)
    channel = await start_server(server)
    assert server.model_host.models[CLASSIFIER].state.value == "ready", server.model_host.models[CLASSIFIER].error
    return server, nlp_service_pb2_grpc.NlpServiceStub(channel), channel


async def test_the_trained_classifier_is_served_by_name(classifier):
    _server, stub, channel = classifier
    texts = list(HELD_OUT)
    reply = await stub.Classify(pb.ClassifyRequest(model=CLASSIFIER, texts=texts))
    assert [r.labels[0].label for r in reply.results] == [HELD_OUT[t] for t in texts]
    for result in reply.results:
        assert sorted(label.label for label in result.labels) == sorted(LABELS)
        assert sum(label.score for label in result.labels) == pytest.approx(1.0, abs=1e-5)
        assert result.token_count > 3 and not result.truncated
    assert reply.selection.model == CLASSIFIER and not reply.selection.automatic
    health = health_pb2_grpc.HealthStub(channel)
    status = await health.Check(health_pb2.HealthCheckRequest(service=CLASSIFIER))
    assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_multi_label_scores_each_label_with_a_sigmoid(classifier):
    _server, stub, _ = classifier
    request = {"model": CLASSIFIER, "texts": ["The doctor prescribed antibiotics"]}
    single = await stub.Classify(pb.ClassifyRequest(**request))
    multi = await stub.Classify(pb.ClassifyRequest(**request, multi_label=True))
    softmax = {label.label: label.score for label in single.results[0].labels}
    sigmoid = {label.label: label.score for label in multi.results[0].labels}
    assert [label.label for label in multi.results[0].labels] == [label.label for label in single.results[0].labels]
    assert sigmoid["medical"] > 0.5 and sum(sigmoid.values()) != pytest.approx(1.0, abs=1e-2), sigmoid
    # Both are functions of the same logits: their differences agree (checked on the unsaturated labels).
    logit = {k: np.log(v / (1 - v)) for k, v in sigmoid.items()}
    for a, b in (("legal", "financial"), ("legal", "general"), ("financial", "general")):
        assert logit[a] - logit[b] == pytest.approx(np.log(softmax[a] / softmax[b]), abs=1e-3)


async def test_auto_without_candidate_labels_picks_the_classifier(classifier):
    _server, stub, _ = classifier
    reply = await stub.Classify(pb.ClassifyRequest(model="auto", texts=["The court dismissed the lawsuit"]))
    assert reply.selection.model == CLASSIFIER and reply.selection.automatic
    assert reply.results[0].labels[0].label == "legal"


async def test_a_classifier_asked_to_embed_is_a_failed_precondition(classifier):
    _server, stub, _ = classifier
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest(model=CLASSIFIER, texts=["hello"]))
    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "text-classification model; Embed needs an embedding model" in error.details()
    _status, details = status_details(error)
    assert details["ErrorInfo"].reason == "MODEL_WRONG_TASK"


async def test_a_classifier_refuses_candidate_labels(classifier):
    _server, stub, _ = classifier
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Classify(pb.ClassifyRequest(model=CLASSIFIER, texts=["hello"], candidate_labels=["a", "b"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not classify zero-shot" in caught.value.details()


def test_the_artifact_layout(classifier_store):
    folder = classifier_store.path(CLASSIFIER)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json"}
    assert manifest["info"]["labels"] == LABELS
    assert classifier_store.verify(CLASSIFIER, deep=True).ok
