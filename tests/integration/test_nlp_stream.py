"""NlpService.StreamEmbed / StreamClassify through a real gateway on the real MiniLM-L6: order, ids, per-item
errors, stream errors, flow control and cancellation (the 10,000-text stream and the memory check: tests/e2e)."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest

from aisemble.nlp.v1 import nlp_service_pb2 as pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from tests.conftest import status_details
from tests.integration.conftest import build_gateway, mesh_for, wait_serving, write_registry

MODEL = "minilm-l6"
SENTENCES = [
    "The patient was given antibiotics for the infection.",
    "The court dismissed the appeal on procedural grounds.",
    "Shares fell sharply after the earnings report.",
    "def parse(line): return line.split(',')",
    "The old lighthouse keeper wrote poems about the sea.",
    "Tomorrow will be sunny with a light breeze.",
    "猫が窓辺で眠っている。",
    "Les enfants jouent dans le parc.",
]


@pytest.fixture(scope="module")
async def gateway(nlp, registry, store, tmp_path_factory):
    """A gateway in this process whose nlp upstream is the session's NLP server. Yields (NlpServiceStub, nlp)."""
    from aisemble.rpc.client import open_channel

    server, _stub, _channel = nlp
    folder = tmp_path_factory.mktemp("stream-gateway")
    path = write_registry(folder / "models.yaml", registry, ["minilm-l6", "minilm-l6-int8", "langid"])
    mesh = mesh_for(nlp=[f"127.0.0.1:{server.port}"])
    gateway_server = build_gateway(ServerConfig(name="gateway"), mesh, registry_path=path, store_root=store.root)
    port = await gateway_server.start()
    await wait_serving(gateway_server, ["minilm-l6"])
    channel = open_channel(f"127.0.0.1:{port}")
    yield nlp_service_pb2_grpc.NlpServiceStub(channel), server
    await channel.close()
    await gateway_server.stop(grace_s=0.5)


def _items(texts, start=0):
    return [pb.TextItem(id=f"t{start + i}", text=text) for i, text in enumerate(texts)]


async def _collect(call):
    return [reply async for reply in call]


def _vectors(results) -> np.ndarray:
    return np.array([list(r.embedding.values) for r in results], dtype=np.float64)


async def test_stream_embed_answers_each_message_in_order_with_embeds_vectors(gateway):
    stub, _server = gateway
    messages = [pb.StreamEmbedRequest(model=MODEL, items=_items(SENTENCES[:3]))]
    messages += [pb.StreamEmbedRequest(items=_items(SENTENCES[3:5], 3)), pb.StreamEmbedRequest()]  # an empty one
    messages += [pb.StreamEmbedRequest(model=MODEL, items=_items(SENTENCES[5:], 5))]
    replies = await _collect(stub.StreamEmbed(iter(messages)))
    assert [len(r.results) for r in replies] == [3, 2, 3]  # one answer per message with texts, in order
    results = [result for reply in replies for result in reply.results]
    assert [r.id for r in results] == [f"t{i}" for i in range(len(SENTENCES))]
    assert replies[0].dimensions == 384 and replies[0].selection.model == MODEL
    assert not replies[0].selection.automatic and replies[0].selection.reason
    unary = await stub.Embed(pb.EmbedRequest(model=MODEL, texts=SENTENCES))
    expected = np.array([list(e.values) for e in unary.embeddings], dtype=np.float64)
    np.testing.assert_allclose(_vectors(results), expected, atol=1e-5)
    assert [r.embedding.token_count for r in results] == [e.token_count for e in unary.embeddings]


async def test_a_bad_item_gets_its_own_error_and_the_stream_goes_on(gateway):
    stub, _server = gateway
    texts = ["a fine text", "   ", "x" * 100_001, "another fine text"]
    messages = [pb.StreamEmbedRequest(model=MODEL, items=_items(texts)), pb.StreamEmbedRequest(items=_items(["after"]))]
    replies = await _collect(stub.StreamEmbed(iter(messages)))
    first, second = replies
    kinds = [r.WhichOneof("outcome") for r in first.results]
    assert kinds == ["embedding", "error", "error", "embedding"]
    empty, long = first.results[1].error, first.results[2].error
    assert (empty.code, empty.reason) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "TEXT_EMPTY")
    assert (long.code, long.reason) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "TEXT_TOO_LONG")
    assert "items[2].text" in long.message and "100001 characters" in long.message
    assert second.results[0].id == "t0" and second.results[0].HasField("embedding")


async def test_stream_classify_zero_shot_matches_classify(gateway):
    stub, _server = gateway
    labels = ["medicine", "law", "finance"]
    first = pb.StreamClassifyRequest(model=MODEL, candidate_labels=labels, items=_items(SENTENCES[:2]))
    messages = [first, pb.StreamClassifyRequest(items=_items(["", SENTENCES[2]], 2))]
    replies = await _collect(stub.StreamClassify(iter(messages)))
    results = [r for reply in replies for r in reply.results]
    assert [r.WhichOneof("outcome") for r in results] == ["classification", "classification", "error", "classification"]
    unary = await stub.Classify(pb.ClassifyRequest(model=MODEL, texts=SENTENCES[:3], candidate_labels=labels))
    streamed = [r for r in results if r.HasField("classification")]
    for got, want in zip(streamed, unary.results, strict=True):
        assert [ls.label for ls in got.classification.labels] == [ls.label for ls in want.labels]
        assert got.classification.labels[0].score == pytest.approx(want.labels[0].score, abs=1e-5)
    assert streamed[0].classification.labels[0].label == "medicine"


@pytest.mark.parametrize(
    ("messages", "code", "reason", "field"),
    [
        ([pb.StreamEmbedRequest(items=_items(["hi"]))], grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "model"),
        (
            [pb.StreamEmbedRequest(model="no-such-model", items=_items(["hi"]))],
            grpc.StatusCode.NOT_FOUND,
            "MODEL_NOT_FOUND",
            None,
        ),
        (
            [pb.StreamEmbedRequest(model="langid", items=_items(["hi"]))],
            grpc.StatusCode.FAILED_PRECONDITION,
            "MODEL_WRONG_TASK",
            None,
        ),
        (
            [pb.StreamEmbedRequest(model=MODEL, max_inflight_texts=0, items=_items(["hi"]))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "max_inflight_texts",
        ),
    ],
    ids=["no-model", "unknown-model", "wrong-task", "bad-inflight"],
)
async def test_a_broken_stream_ends_with_a_status(gateway, messages, code, reason, field):
    stub, _server = gateway
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(stub.StreamEmbed(iter(messages)))
    assert caught.value.code() == code, caught.value.details()
    _status, details = status_details(caught.value)
    assert details["ErrorInfo"].reason == reason
    if field:
        assert [v.field for v in details["BadRequest"].field_violations] == [field]


async def test_a_changed_setting_or_an_oversized_message_ends_the_stream_after_the_earlier_answers(gateway):
    stub, _server = gateway
    for later, reason in [
        (pb.StreamEmbedRequest(model="minilm-l6-int8", items=_items(["b"])), "INVALID_ARGUMENT"),
        (pb.StreamEmbedRequest(normalize=False, items=_items(["b"])), "INVALID_ARGUMENT"),
        (pb.StreamEmbedRequest(items=_items(["b"] * 257)), "TOO_MANY_TEXTS"),
    ]:
        call = stub.StreamEmbed(iter([pb.StreamEmbedRequest(model=MODEL, items=_items(["a"])), later]))
        replies = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for reply in call:
                replies.append(reply)
        assert [r.results[0].id for r in replies] == ["t0"]  # the first message was answered
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert status_details(caught.value)[1]["ErrorInfo"].reason == reason
        assert "message 1 of the stream" in caught.value.details()


async def test_the_server_holds_at_most_max_inflight_texts_of_a_stream_that_is_not_read(gateway):
    """A client that writes fast and does not read: the server stops taking its messages (flow control)."""
    stub, server = gateway
    sent = 0

    async def messages():
        nonlocal sent
        yield pb.StreamEmbedRequest(model=MODEL, max_inflight_texts=64)
        text = "a sentence of two hundred characters or so, written to fill the stream's windows quickly; " * 2
        for index in range(2000):  # 2000 x 256 x 200 bytes: 100 MB, far more than gRPC's windows hold
            sent += 1
            yield pb.StreamEmbedRequest(items=_items([text] * 256, index * 256))

    batcher = server.bindings[0].servicer.runner.batcher(MODEL)
    call = stub.StreamEmbed(messages())
    await call.read()  # the stream is running
    queued, taken = [], []
    for _ in range(150):  # nobody reads; until nothing more has been taken for 1 s (at most 15 s)
        await asyncio.sleep(0.1)
        queued.append(batcher.queued)
        taken.append(sent)
        if len(taken) > 10 and taken[-1] == taken[-11]:
            break
    print(f"while nobody read: {sent} messages taken from the writer; texts queued for the model: {max(queued)}")
    # gRPC's windows (two hops, grown by its bandwidth probe) hold some megabytes, in both directions: the
    # server takes messages while its replies still fit in the windows back (the model's pace), then the
    # writer waits.
    assert taken[-1] == taken[-11], f"the writer was still not held back after 15 s ({sent} of 2000 taken)"
    assert sent < 700, f"the writer was held back only after {sent} of 2000 messages"
    assert max(queued) <= 256  # one message at a time (heavier than max_inflight_texts, so it runs alone)
    call.cancel()


async def test_cancelling_a_stream_drops_its_queued_texts(gateway):
    stub, server = gateway
    runner = server.bindings[0].servicer.runner
    texts = [f"a sentence about the weather on day {i}" for i in range(256)]

    async def messages():
        yield pb.StreamEmbedRequest(model=MODEL, max_inflight_texts=4096)
        for index in range(16):
            yield pb.StreamEmbedRequest(items=_items(texts, index * 256))
        await asyncio.sleep(30)  # keep the stream open

    call = stub.StreamEmbed(messages())
    await call.read()
    batcher = runner.batcher(MODEL)
    for _ in range(200):
        if batcher.queued > 256:
            break
        await asyncio.sleep(0.01)
    assert batcher.queued > 256, "the stream never queued texts"
    calls_before = batcher.stats.calls
    call.cancel()
    for _ in range(300):
        if batcher.queued == 0:
            break
        await asyncio.sleep(0.01)
    assert batcher.queued == 0
    assert batcher.stats.calls - calls_before <= 3  # at most the batches already running finished
    started = time.perf_counter()
    reply = await stub.Embed(pb.EmbedRequest(model=MODEL, texts=["served at once"]))
    assert len(reply.embeddings) == 1 and time.perf_counter() - started < 5
