"""Bad input to the NLP service, each through a real server: a precise status, never UNKNOWN or INTERNAL."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

from aisemble.hosting.batching import BatchingConfig
from aisemble.nlp.v1 import nlp_service_pb2 as pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from services.nlp.app import build_server
from services.nlp.runner import NlpLimits
from tests.conftest import status_details

MODEL = "minilm-l6"
WINDOW_BUSTER = "word " * 1000  # ~1000 tokens, far past MiniLM's 256


async def _error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), error.details()
    return error


def _fields(error: grpc.aio.AioRpcError) -> list[str]:
    _status, details = status_details(error)
    return [v.field for v in details["BadRequest"].field_violations]


def _reason(error: grpc.aio.AioRpcError) -> str:
    _status, details = status_details(error)
    return details["ErrorInfo"].reason


@pytest.mark.parametrize("rpc", ["Embed", "Classify", "DetectLanguage"])
async def test_no_texts(nlp, rpc):
    _server, stub, _ = nlp
    request = {
        "Embed": pb.EmbedRequest(model=MODEL),
        "Classify": pb.ClassifyRequest(model=MODEL, candidate_labels=["a", "b"]),
        "DetectLanguage": pb.DetectLanguageRequest(),
    }[rpc]
    error = await _error(getattr(stub, rpc)(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(error) == ["texts"]


async def test_an_empty_text_is_refused_by_embed_and_classify_and_und_for_detect_language(nlp):
    _server, stub, _ = nlp
    error = await _error(stub.Embed(pb.EmbedRequest(model=MODEL, texts=["fine", "", " \n\t"])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(error) == ["texts[1]", "texts[2]"]
    error = await _error(stub.Classify(pb.ClassifyRequest(model=MODEL, texts=[""], candidate_labels=["a", "b"])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and _fields(error) == ["texts[0]"]
    reply = await stub.DetectLanguage(pb.DetectLanguageRequest(texts=["", "Good morning to you all"]))
    assert [r.language_code for r in reply.results] == ["und", "en"]


@pytest.mark.parametrize("rpc", ["Embed", "Classify", "DetectLanguage"])
async def test_more_texts_than_the_limit(nlp, rpc):
    _server, stub, _ = nlp
    texts = ["hello"] * 257
    request = {
        "Embed": pb.EmbedRequest(model=MODEL, texts=texts),
        "Classify": pb.ClassifyRequest(model=MODEL, texts=texts, candidate_labels=["a", "b"]),
        "DetectLanguage": pb.DetectLanguageRequest(texts=texts),
    }[rpc]
    error = await _error(getattr(stub, rpc)(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(error) == "TOO_MANY_TEXTS" and "at most 256" in error.details()


async def test_a_text_longer_than_the_window_is_truncated_and_says_so(nlp):
    _server, stub, _ = nlp
    embedded = await stub.Embed(pb.EmbedRequest(model=MODEL, texts=[WINDOW_BUSTER, "short"]))
    assert [e.truncated for e in embedded.embeddings] == [True, False]
    assert [e.token_count for e in embedded.embeddings] == [256, 3]
    classified = await stub.Classify(
        pb.ClassifyRequest(model=MODEL, texts=[WINDOW_BUSTER], candidate_labels=["language", "sports"])
    )
    assert classified.results[0].truncated and classified.results[0].token_count == 256


async def test_a_text_over_the_character_limit_is_refused(nlp):
    _server, stub, _ = nlp
    error = await _error(stub.Embed(pb.EmbedRequest(model=MODEL, texts=["ok", "x" * 100_001])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and _fields(error) == ["texts[1]"]


@pytest.mark.parametrize(
    ("labels", "multi_label", "fields"),
    [
        (["medical", "legal", "medical"], False, ["candidate_labels[2]"]),
        (["medical", " legal ", "legal"], False, ["candidate_labels[2]"]),
        (["medical", "", "legal"], False, ["candidate_labels[1]"]),
        (["medical", "   "], False, ["candidate_labels[1]"]),
        (["medical"], False, ["candidate_labels"]),
        (["x" * 300, "legal"], False, ["candidate_labels[0]"]),
        ([f"label {i}" for i in range(65)], False, ["candidate_labels"]),
    ],
)
async def test_bad_candidate_labels(nlp, labels, multi_label, fields):
    _server, stub, _ = nlp
    request = pb.ClassifyRequest(model=MODEL, texts=["hello"], candidate_labels=labels, multi_label=multi_label)
    error = await _error(stub.Classify(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(error) == fields


async def test_one_candidate_label_is_fine_with_multi_label(nlp):
    _server, stub, _ = nlp
    reply = await stub.Classify(
        pb.ClassifyRequest(
            model=MODEL, texts=["The patient has a fever"], candidate_labels=["medical"], multi_label=True
        )
    )
    assert reply.results[0].labels[0].label == "medical" and reply.results[0].labels[0].score > 0.5


async def test_an_embedding_model_needs_candidate_labels_to_classify(nlp):
    _server, stub, _ = nlp
    error = await _error(stub.Classify(pb.ClassifyRequest(model=MODEL, texts=["hello"])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(error) == ["candidate_labels"] and "zero-shot" in error.details()


@pytest.mark.parametrize("rpc", ["Embed", "Classify", "DetectLanguage"])
async def test_unknown_model(nlp, rpc):
    _server, stub, _ = nlp
    request = {
        "Embed": pb.EmbedRequest(model="no-such-model", texts=["a"]),
        "Classify": pb.ClassifyRequest(model="no-such-model", texts=["a"], candidate_labels=["a", "b"]),
        "DetectLanguage": pb.DetectLanguageRequest(model="no-such-model", texts=["a"]),
    }[rpc]
    error = await _error(getattr(stub, rpc)(request))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert _reason(error) == "MODEL_NOT_FOUND" and "no-such-model" in error.details()


@pytest.mark.parametrize("rpc", ["Embed", "Classify"])
async def test_model_is_required(nlp, rpc):
    _server, stub, _ = nlp
    request = {
        "Embed": pb.EmbedRequest(texts=["a"]),
        "Classify": pb.ClassifyRequest(texts=["a"], candidate_labels=["a", "b"]),
    }[rpc]
    error = await _error(getattr(stub, rpc)(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and _fields(error) == ["model"]


@pytest.mark.parametrize(
    ("rpc", "request_", "needs"),
    [
        ("Embed", pb.EmbedRequest(model="langid", texts=["a"]), "Embed needs an embedding model"),
        ("Classify", pb.ClassifyRequest(model="langid", texts=["a"], candidate_labels=["a", "b"]), "Classify needs"),
        ("DetectLanguage", pb.DetectLanguageRequest(model=MODEL, texts=["a"]), "needs a language-detection model"),
    ],
)
async def test_a_model_of_another_task(nlp, rpc, request_, needs):
    _server, stub, _ = nlp
    error = await _error(getattr(stub, rpc)(request_))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(error) == "MODEL_WRONG_TASK" and needs in error.details()


async def test_top_k_must_be_positive(nlp):
    _server, stub, _ = nlp
    error = await _error(stub.DetectLanguage(pb.DetectLanguageRequest(texts=["hello"], top_k=0)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and _fields(error) == ["top_k"]


async def test_a_huge_top_k_is_capped_at_the_model_languages(nlp):
    _server, stub, _ = nlp
    reply = await stub.DetectLanguage(pb.DetectLanguageRequest(texts=["hello there my friend"], top_k=1000))
    # At most the other 175 languages; fastText leaves out those of negligible probability.
    assert 10 <= len(reply.results[0].alternatives) <= 175


async def test_a_deadline_too_short_gives_deadline_exceeded(nlp):
    _server, stub, _ = nlp
    texts = ["The quick brown fox jumps over the lazy dog. " * 4] * 256  # 8 calls of ~0.1 s or more
    error = await _error(stub.Embed(pb.EmbedRequest(model=MODEL, texts=texts), timeout=0.005))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_full_queue_gives_resource_exhausted_with_retry_info(registry, store, start_server):
    spec = dataclasses.replace(registry[MODEL], params={})  # the service defaults below, not the registry's
    limits = NlpLimits(max_texts_per_request=8, batching=BatchingConfig(max_batch_size=1, max_wait_s=0, max_queued=8))
    server = build_server(ServerConfig(name="nlp-small"), None, {MODEL: spec}, store=store, limits=limits)
    stub = nlp_service_pb2_grpc.NlpServiceStub(await start_server(server))
    request = pb.EmbedRequest(model=MODEL, texts=[WINDOW_BUSTER] * 8)
    outcomes = await asyncio.gather(*(stub.Embed(request) for _ in range(6)), return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    served = [o for o in outcomes if isinstance(o, pb.EmbedResponse)]
    assert served and errors, outcomes
    assert {e.code() for e in errors} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    _status, details = status_details(errors[0])
    assert details["ErrorInfo"].reason == "QUEUE_FULL" and "RetryInfo" in details
    assert all(len(r.embeddings) == 8 and r.embeddings[0].truncated for r in served)
