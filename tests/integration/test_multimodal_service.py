"""MultimodalService.Analyze composed over real vision and NLP servers (in process), with partial failures."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from aisemble.common.v1 import common_pb2
from aisemble.multimodal.v1 import multimodal_service_pb2 as pb
from aisemble.multimodal.v1 import multimodal_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from services.multimodal.app import build_server
from tests.assets.pictures import bus_jpg, encode, render_line
from tests.conftest import status_details

DEAD = "127.0.0.1:9"  # nothing listens there: calls fail at once with UNAVAILABLE


def _bus_with_sign() -> bytes:
    """bus.jpg with a white sign reading HELLO MESH pasted on the sky at the top."""
    bus = Image.open(io.BytesIO(bus_jpg())).convert("RGB")
    bus.paste(render_line("HELLO MESH", size=40), (20, 20))
    return encode(bus, "JPEG", quality=92)


@pytest.fixture(scope="module")
def picture() -> common_pb2.Image:
    return common_pb2.Image(data=_bus_with_sign())


async def _multimodal(start_server, vision_target: str, nlp_target: str):
    server = build_server(ServerConfig(name="multimodal"), None, {}, vision_target=vision_target, nlp_target=nlp_target)
    return multimodal_service_pb2_grpc.MultimodalServiceStub(await start_server(server))


@pytest.fixture
async def analyzer(vision, nlp, start_server):
    return await _multimodal(start_server, f"127.0.0.1:{vision[0].port}", f"127.0.0.1:{nlp[0].port}")


def _mentions(reply: pb.AnalyzeResponse) -> dict[str, pb.Mention]:
    return {m.term: m for m in reply.mentions}


async def test_analyze_returns_every_part_and_what_the_text_mentions(analyzer, picture):
    text = "Normal pedestrians wait by the bus; a sign says hello."
    reply = await analyzer.Analyze(pb.AnalyzeRequest(image=picture, text=text), timeout=60)
    assert not reply.part_failures, reply.part_failures
    people = [i for i, d in enumerate(reply.detection.detections) if d.class_name == "Normal"]
    assert len(people) >= 3 and reply.detection.selection.model == "yolov8-fall"
    assert "HELLO" in reply.ocr.full_text and reply.ocr.selection.model == "ppocr-v4"
    language = reply.text_analysis.language
    assert len(language.results) == 1 and language.results[0].language_code == "en"
    embedding = reply.text_analysis.embedding
    assert embedding.dimensions == 384 and len(embedding.embeddings) == 1 and not embedding.embeddings[0].values
    mentions = _mentions(reply)
    normal = mentions["Normal"]
    assert normal.source == pb.MENTION_SOURCE_DETECTION and normal.matched_text == "Normal" and normal.score == 1.0
    assert sorted(normal.item_indices) == people
    hello = mentions["HELLO"]
    assert hello.source == pb.MENTION_SOURCE_OCR and hello.matched_text == "hello" and hello.score == 1.0
    assert all("HELLO" in reply.ocr.lines[i].text for i in hello.item_indices)
    assert "MESH" not in mentions  # the text does not mention it
    scores = [m.score for m in reply.mentions]
    assert scores == sorted(scores, reverse=True)


async def test_mentions_by_meaning_use_the_embedding_model(analyzer, picture):
    reply = await analyzer.Analyze(pb.AnalyzeRequest(image=picture, text="The sign on top says hi."), timeout=60)
    hello = _mentions(reply)["HELLO"]
    assert hello.matched_text == "hi" and 0.7 <= hello.score < 1.0  # MiniLM: cos("hello", "hi") ~ 0.81


async def test_include_embedding_returns_the_vector(analyzer, picture):
    reply = await analyzer.Analyze(
        pb.AnalyzeRequest(image=picture, text="a bus", include_embedding=True, embedding_model="minilm-l6"),
        timeout=60,
    )
    values = np.asarray(reply.text_analysis.embedding.embeddings[0].values)
    assert values.shape == (384,) and np.linalg.norm(values) == pytest.approx(1.0, abs=1e-3)
    assert reply.text_analysis.embedding.selection.model == "minilm-l6"


async def test_a_failing_part_is_reported_not_fatal(analyzer, picture):
    reply = await analyzer.Analyze(
        pb.AnalyzeRequest(image=picture, text="hello there", detection_model="no-such-detector"), timeout=60
    )
    assert [(f.part, f.code, f.reason) for f in reply.part_failures] == [
        ("detection", grpc.StatusCode.NOT_FOUND.value[0], "MODEL_NOT_FOUND")
    ]
    assert "no-such-detector" in reply.part_failures[0].message
    assert not reply.HasField("detection") and reply.HasField("ocr")
    assert reply.text_analysis.language.results[0].language_code == "en"
    assert [m.term for m in reply.mentions] == ["HELLO"]


async def test_a_bad_image_fails_the_image_parts_only(analyzer):
    reply = await analyzer.Analyze(
        pb.AnalyzeRequest(image=common_pb2.Image(data=b"not an image"), text="hello"), timeout=60
    )
    failures = {f.part: f for f in reply.part_failures}
    assert set(failures) == {"detection", "ocr"}
    assert all(
        f.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and f.reason == "INVALID_IMAGE" for f in failures.values()
    )
    assert reply.text_analysis.HasField("language") and reply.text_analysis.HasField("embedding")
    assert not reply.mentions


async def test_nlp_down_leaves_vision_parts_and_word_matches(vision, start_server, picture):
    analyzer = await _multimodal(start_server, f"127.0.0.1:{vision[0].port}", DEAD)
    reply = await analyzer.Analyze(pb.AnalyzeRequest(image=picture, text="it says hello"), timeout=60)
    failures = {f.part: f for f in reply.part_failures}
    assert set(failures) == {"language", "embedding"}
    assert all(f.code == grpc.StatusCode.UNAVAILABLE.value[0] for f in failures.values())
    assert not reply.HasField("text_analysis")
    assert reply.detection.detections and _mentions(reply)["HELLO"].score == 1.0  # lexical matching still works


async def test_every_part_failing_fails_the_call(start_server, picture):
    analyzer = await _multimodal(start_server, DEAD, DEAD)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await analyzer.Analyze(pb.AnalyzeRequest(image=picture, text="hello"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = status_details(caught.value)[1]["ErrorInfo"]
    assert info.reason == "ALL_PARTS_FAILED" and set(info.metadata) == {"detection", "ocr", "language", "embedding"}


async def test_invalid_requests(analyzer):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await analyzer.Analyze(pb.AnalyzeRequest(text="  ", score_threshold=2.0))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in status_details(caught.value)[1]["BadRequest"].field_violations}
    assert fields == {"image", "text", "score_threshold"}
