"""The NLP service on the real MiniLM-L6 (ONNX Runtime) and fastText lid.176, through a real grpc.aio server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisemble.nlp.v1 import nlp_service_pb2 as pb

MODEL = "minilm-l6"
INT8 = "minilm-l6-int8"
LONG_TEXT = "The committee discussed the annual budget and the new hiring plan in great detail. " * 40
SENTENCES = [
    "eating food",
    "eating bread",
    "stock market",
    "A man is playing a guitar on the street.",
    "The central bank raised interest rates by a quarter point on Tuesday.",
    "Les chats dorment au soleil.",
    LONG_TEXT,
]
DOMAINS = ["medical", "legal", "financial"]


def _vectors(reply: pb.EmbedResponse) -> np.ndarray:
    return np.array([list(e.values) for e in reply.embeddings], dtype=np.float64)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def torch_reference(store):
    """sentence-transformers' recipe on the torch model in the artifact's hf/ folder: mean pooling, L2 norm."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = store.path(MODEL) / "hf"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()

    def embed(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).numpy().astype(np.float64)

    return embed


async def test_embeddings_match_the_transformers_model(nlp, torch_reference):
    _server, stub, _ = nlp
    reply = await stub.Embed(pb.EmbedRequest(model=MODEL, texts=SENTENCES))
    assert reply.dimensions == 384 and len(reply.embeddings) == len(SENTENCES)
    ours = _vectors(reply)
    reference = torch_reference(SENTENCES)
    cosines = _cos(ours, reference)
    assert cosines.min() >= 1 - 1e-4, cosines
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert reply.selection.model == MODEL and not reply.selection.automatic
    # The long text was cut to the 256-token window, the others were not.
    assert [e.truncated for e in reply.embeddings] == [False] * 6 + [True]
    assert reply.embeddings[-1].token_count == 256
    assert reply.embeddings[0].token_count == 4  # [CLS] eating food [SEP]


async def test_similar_meanings_are_closer(nlp):
    _server, stub, _ = nlp
    reply = await stub.Embed(pb.EmbedRequest(model=MODEL, texts=["eating food", "eating bread", "stock market"]))
    food, bread, market = _vectors(reply)
    close, far = float(food @ bread), float(food @ market)
    assert close > 0.6 and far < 0.25 and close - far > 0.4, (close, far)


async def test_normalize_false_gives_the_raw_mean_pooled_vector(nlp):
    _server, stub, _ = nlp
    raw = await stub.Embed(pb.EmbedRequest(model=MODEL, texts=SENTENCES[:3], normalize=False))
    unit = await stub.Embed(pb.EmbedRequest(model=MODEL, texts=SENTENCES[:3], normalize=True))
    raw_vectors, unit_vectors = _vectors(raw), _vectors(unit)
    assert not np.allclose(np.linalg.norm(raw_vectors, axis=1), 1.0, atol=1e-2)
    assert _cos(raw_vectors, unit_vectors).min() > 1 - 1e-6


async def test_int8_variant_stays_close_to_fp32(nlp):
    _server, stub, _ = nlp
    fp32 = _vectors(await stub.Embed(pb.EmbedRequest(model=MODEL, texts=SENTENCES)))
    int8_reply = await stub.Embed(pb.EmbedRequest(model=INT8, texts=SENTENCES))
    assert int8_reply.selection.model == INT8 and int8_reply.dimensions == 384
    cosines = _cos(_vectors(int8_reply), fp32)
    assert cosines.min() > 0.97 and cosines.mean() > 0.985, cosines


async def test_zero_shot_says_medical_for_a_fever(nlp):
    _server, stub, _ = nlp
    reply = await stub.Classify(
        pb.ClassifyRequest(
            model=MODEL,
            texts=[
                "The patient shows symptoms of fever",
                "The court ruled that the contract was void",
                "Quarterly earnings beat analyst expectations and the stock rose",
            ],
            candidate_labels=DOMAINS,
        )
    )
    best = [r.labels[0].label for r in reply.results]
    assert best == ["medical", "legal", "financial"]
    for result in reply.results:
        scores = [label.score for label in result.labels]
        assert sorted(label.label for label in result.labels) == sorted(DOMAINS)
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert reply.results[0].labels[0].score > 0.9
    assert reply.results[0].token_count > 3 and not reply.results[0].truncated


async def test_zero_shot_multi_label_scores_each_label_on_its_own(nlp):
    _server, stub, _ = nlp
    reply = await stub.Classify(
        pb.ClassifyRequest(
            model=MODEL,
            texts=["The hospital was sued for malpractice after the surgery went wrong"],
            candidate_labels=["medical", "legal", "cooking"],
            multi_label=True,
        )
    )
    scores = {label.label: label.score for label in reply.results[0].labels}
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert scores["medical"] > 0.5 and scores["legal"] > 0.5 and scores["cooking"] < 0.5, scores


async def test_auto_picks_the_default_model_for_the_task(nlp):
    _server, stub, _ = nlp
    embedded = await stub.Embed(pb.EmbedRequest(model="auto", texts=["hello"]))
    assert embedded.selection.model == MODEL and embedded.selection.automatic
    classified = await stub.Classify(
        pb.ClassifyRequest(model="auto", texts=["The patient shows symptoms of fever"], candidate_labels=DOMAINS)
    )
    assert classified.selection.model == MODEL and classified.results[0].labels[0].label == "medical"


async def test_detect_language(nlp):
    _server, stub, _ = nlp
    texts = [
        "今日はとても良い天気ですね。散歩に行きましょう。",
        "The weather is lovely today, let's go for a walk.",
        "Il fait très beau aujourd'hui, allons nous promener.",
        "今天天气很好，我们去散步吧。",  # noqa: RUF001 - a Chinese comma
        "Heute ist das Wetter sehr schön.",
    ]
    reply = await stub.DetectLanguage(pb.DetectLanguageRequest(texts=texts))
    assert [r.language_code for r in reply.results] == ["ja", "en", "fr", "zh", "de"]
    assert all(0.5 < r.score <= 1.0 for r in reply.results)
    assert reply.results[0].score > 0.9
    assert all(len(r.alternatives) == 2 for r in reply.results)  # top_k unset: 3
    assert reply.selection.model == "langid" and reply.selection.automatic
    assert reply.results[1].token_count == 10 and not reply.results[1].truncated

    named = await stub.DetectLanguage(pb.DetectLanguageRequest(model="langid", texts=texts[:1], top_k=5))
    assert named.results[0].language_code == "ja" and len(named.results[0].alternatives) == 4
    assert not named.selection.automatic
    alternatives = [a.score for a in named.results[0].alternatives]
    assert alternatives == sorted(alternatives, reverse=True) and alternatives[0] <= named.results[0].score


async def test_detect_language_of_texts_without_language_and_of_long_texts(nlp):
    _server, stub, _ = nlp
    reply = await stub.DetectLanguage(
        pb.DetectLanguageRequest(texts=["", "   ", "12345 !!! 3.14", "Hello, world", "Bonjour le monde. " * 500])
    )
    codes = [r.language_code for r in reply.results]
    assert codes[:3] == ["und", "und", "und"] and codes[3] == "en" and codes[4] == "fr"
    assert all(r.score == 0.0 and not r.alternatives for r in reply.results[:3])
    assert reply.results[4].truncated and not reply.results[3].truncated


async def test_concurrent_requests_are_batched_and_split_back(nlp):
    server, stub, _ = nlp
    texts = [f"Sentence number {i} is about {topic}." for i, topic in enumerate(["cats", "tax", "rain", "jazz"] * 6)]
    alone = _vectors(await stub.Embed(pb.EmbedRequest(model=MODEL, texts=texts)))
    batcher = _batcher(server, MODEL)
    before = batcher.stats.calls
    replies = await asyncio.gather(*(stub.Embed(pb.EmbedRequest(model=MODEL, texts=[t])) for t in texts))
    calls = batcher.stats.calls - before
    assert calls < len(texts), f"{len(texts)} concurrent requests took {calls} ONNX calls"
    together = np.array([_vectors(r)[0] for r in replies])
    assert _cos(together, alone).min() > 1 - 1e-5  # each request got its own text's vector back


async def test_a_request_with_many_texts_is_chunked(nlp):
    server, stub, _ = nlp
    batcher = _batcher(server, MODEL)
    texts = [f"Item {i}: {'apples' if i % 2 else 'oranges'} are on sale." for i in range(100)]
    before = batcher.stats.calls
    reply = await stub.Embed(pb.EmbedRequest(model=MODEL, texts=texts))
    assert len(reply.embeddings) == 100
    assert batcher.stats.calls - before >= 4 and batcher.stats.largest_batch <= 32
    first = _vectors(await stub.Embed(pb.EmbedRequest(model=MODEL, texts=texts[:1])))[0]
    last = _vectors(await stub.Embed(pb.EmbedRequest(model=MODEL, texts=texts[-1:])))[0]
    vectors = _vectors(reply)
    assert _cos(vectors[0], first) > 1 - 1e-5 and _cos(vectors[-1], last) > 1 - 1e-5


async def test_each_model_reports_health(nlp):
    _server, _stub, channel = nlp
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "aisemble.nlp.v1.NlpService", MODEL, INT8, "langid"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def _batcher(server, model):
    servicer = server.bindings[0].servicer
    return servicer.runner.batcher(model)
