"""Bulk streams on the session mesh (separate processes, as `aisemble up` runs them): 10,000 texts through
StreamEmbed, a reader that stops reading, and StreamRun, all through the gateway."""

from __future__ import annotations

import json
import time

import numpy as np

from aisemble.ensemble.v1 import ensemble_service_pb2 as epb
from aisemble.ensemble.v1 import ensemble_service_pb2_grpc
from aisemble.nlp.v1 import nlp_service_pb2 as pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from tests.e2e.conftest import call_metadata
from tests.e2e.test_cli import _cli, _json_lines
from tests.e2e.traffic import read_processes, rss_kb

MODEL = "minilm-l6"
SUBJECTS = ["The doctor", "A lawyer", "The trader", "Our engineer", "The poet", "A child", "The pilot", "My neighbour"]
ACTIONS = ["reviewed", "wrote about", "argued over", "forgot", "explained", "laughed at", "studied", "painted"]
OBJECTS = ["the contract", "a new vaccine", "the bond market", "a sorting algorithm", "the sunset", "a red kite"]


def _texts(count: int) -> list[str]:
    """Distinct, varied sentences (so that a shifted or swapped vector would be noticed)."""
    return [f"{SUBJECTS[i % 8]} {ACTIONS[(i // 8) % 8]} {OBJECTS[(i // 64) % 6]} on day {i}." for i in range(count)]


def test_ten_thousand_texts_arrive_in_order_with_their_ids_and_embeds_vectors(mesh):
    channel, _process, folder, _output = mesh
    stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
    texts = _texts(10_000)

    def messages():
        yield pb.StreamEmbedRequest(model=MODEL)
        for start in range(0, len(texts), 100):
            chunk = texts[start : start + 100]
            yield pb.StreamEmbedRequest(items=[pb.TextItem(id=f"doc-{start + i}", text=t) for i, t in enumerate(chunk)])

    started = time.perf_counter()
    replies = list(stub.StreamEmbed(messages(), metadata=call_metadata("admin", folder, "bulk-10k"), timeout=600))
    seconds = time.perf_counter() - started
    results = [result for reply in replies for result in reply.results]
    print(f"10,000 texts through StreamEmbed via the gateway in {seconds:.1f} s ({len(texts) / seconds:.0f} texts/s)")
    assert len(replies) == 100 and replies[0].selection.model == MODEL
    assert [r.id for r in results] == [f"doc-{i}" for i in range(len(texts))]
    assert all(r.HasField("embedding") and len(r.embedding.values) == 384 for r in results)
    sample = list(range(0, len(texts), 40))  # 250 texts across the whole stream, one unary Embed
    unary = stub.Embed(
        pb.EmbedRequest(model=MODEL, texts=[texts[i] for i in sample]),
        metadata=call_metadata("admin", folder, "bulk-10k-check"),
        timeout=60,
    )
    streamed = np.array([results[i].embedding.values for i in sample])
    np.testing.assert_allclose(streamed, np.array([e.values for e in unary.embeddings]), atol=1e-5)


def test_a_reader_that_stops_reading_keeps_the_servers_memory_bounded(mesh):
    """The client offers 100 MB of texts and reads nothing for 2 s: the gateway and the NLP replicas hold what
    gRPC's windows and the stream's in-flight bound allow, then stop reading; their memory stays flat."""
    channel, _process, folder, _output = mesh
    stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
    processes = read_processes(folder)
    watched = {name: int(processes[name]["pid"]) for name in ("gateway", "nlp", "nlp#1")}
    before = {name: rss_kb(pid) for name, pid in watched.items()}
    taken = 0
    text = "a sentence of about two hundred characters, long enough to fill the stream's flow-control windows. " * 2

    def messages():
        nonlocal taken
        yield pb.StreamEmbedRequest(model=MODEL, max_inflight_texts=256)
        for index in range(2000):  # 2000 x 256 texts x 200 bytes: 100 MB on offer
            taken += 1
            yield pb.StreamEmbedRequest(items=[pb.TextItem(id=str(index), text=text)] * 256)

    call = stub.StreamEmbed(messages(), metadata=call_metadata("admin", folder, "stalled-reader"), timeout=120)
    next(call)  # the stream runs
    time.sleep(2.0)  # and nobody reads it
    held, during = taken, {name: rss_kb(pid) for name, pid in watched.items()}
    time.sleep(1.0)
    after = {name: rss_kb(pid) for name, pid in watched.items()}
    call.cancel()
    growth_mb = {name: (after[name] - before[name]) / 1024 for name in watched}
    print(f"messages taken while nobody read: {held} of 2000; RSS growth (MB): {growth_mb}")
    assert taken == held < 700, "the writer was not held back"
    assert all(after[name] - during[name] < 8 * 1024 for name in watched), (during, after)  # flat while stalled
    assert all(growth < 128 for growth in growth_mb.values()), growth_mb


def test_stream_run_through_the_gateway_sends_each_member_then_the_combined_result(mesh):
    channel, _process, folder, _output = mesh
    stub = ensemble_service_pb2_grpc.EnsembleServiceStub(channel)
    classification = pb.ClassifyRequest(
        texts=["The patient needs surgery.", "The court ruled today."], candidate_labels=["medicine", "law"]
    )
    run = epb.RunRequest(members=[epb.Member(model="minilm-l6"), epb.Member(model="minilm-l6-int8")])
    run.classification.CopyFrom(classification)
    messages = list(
        stub.StreamRun(epb.StreamRunRequest(run=run), metadata=call_metadata("admin", folder, "stream-run"), timeout=60)
    )
    assert [m.WhichOneof("event") for m in messages] == ["member_result", "member_result", "combined"]
    assert {m.member_result.model for m in messages[:2]} == {"minilm-l6", "minilm-l6-int8"}
    combined = messages[2].combined
    assert [r.labels[0].label for r in combined.classification.results] == ["medicine", "law"]
    assert combined.strategy == epb.STRATEGY_PROBABILITY_AVERAGE


def test_the_cli_streams_a_jsonl_file_through_stream_embed(mesh, tmp_path):
    """`aisemble embed --stream FILE.jsonl`: one JSON line per text, in order, ids kept, a bad line's error in its
    place, a progress bar on stderr; the exit status says that a text failed."""
    folder = mesh[2]
    texts = _texts(300)
    lines = [json.dumps({"id": f"doc-{i}", "text": text}) for i, text in enumerate(texts)]
    lines.insert(150, json.dumps({"id": "blank", "text": "   "}))
    lines.append(json.dumps("a plain JSON string is a text too"))
    source = tmp_path / "texts.jsonl"
    source.write_text("\n".join(lines) + "\n")
    ran = _cli(folder, "embed", "--model", MODEL, "--stream", str(source), "--batch", "32", ok=False)
    assert ran.returncode == 1  # one text failed
    out = _json_lines(ran.stdout)
    assert [o["id"] for o in out] == [f"doc-{i}" for i in range(150)] + ["blank"] + [
        f"doc-{i}" for i in range(150, 300)
    ] + ["302"]
    assert out[150]["error"]["reason"] == "TEXT_EMPTY" and out[150]["error"]["code"] == "INVALID_ARGUMENT"
    assert all(len(o["embedding"]) == 384 for o in out if o["id"] != "blank")
    assert "302/302" in ran.stderr and "302 texts embedded (1 failed)" in ran.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    refused = _cli(folder, "embed", "--stream", str(bad), ok=False)
    assert (
        refused.returncode == 1 and "bad.jsonl:2: not JSON" in refused.stderr and len(_json_lines(refused.stdout)) == 1
    )
