"""StreamDetect through a real server: one ordered answer per frame, backpressure policies, stream errors."""

from __future__ import annotations

import asyncio
import io

import grpc
import pytest
from PIL import Image

from aisemble.common.v1 import common_pb2
from aisemble.rpc.server import ServerConfig
from aisemble.vision.v1 import vision_service_pb2 as pb
from aisemble.vision.v1 import vision_service_pb2_grpc
from services.vision.app import build_server
from tests.assets.pictures import bus_jpg, encode
from tests.conftest import status_details

FAST = "nudenet"  # YOLOv8n at 320 px: tens of milliseconds a frame
SLOW = "yolov8-fall"  # YOLOv8 at 640 px: far slower than a client can send


def _frames(count: int, **first_settings) -> list[pb.StreamDetectRequest]:
    """Frames of distinct widths (so each answer can be matched to its frame): bus photos and blank ones."""
    bus = Image.open(io.BytesIO(bus_jpg())).convert("RGB")
    messages = []
    for index in range(count):
        width = 200 + index
        picture = bus.resize((width, round(width * 4 / 3))) if index % 2 == 0 else Image.new("RGB", (width, 90))
        message = pb.StreamDetectRequest(frame=common_pb2.Image(data=encode(picture, "JPEG")), frame_index=index)
        if index == 0:
            for key, value in first_settings.items():
                setattr(message, key, value)
        messages.append(message)
    return messages


async def _send(messages, sent: list[int] | None = None, delay_s: float = 0.0):
    for message in messages:
        if sent is not None:
            sent.append(message.frame_index)
        yield message
        if delay_s:
            await asyncio.sleep(delay_s)


async def test_thirty_frames_get_thirty_answers_in_order(vision):
    _server, stub, _, _ = vision
    frames = _frames(30, model=FAST, score_threshold=0.2)
    replies = [reply async for reply in stub.StreamDetect(_send(frames))]
    assert [r.frame_index for r in replies] == list(range(30))
    assert not any(r.dropped for r in replies)
    assert [r.image_width for r in replies] == [200 + i for i in range(30)]  # each answer is its own frame's
    assert replies[0].selection.model == FAST and not replies[1].HasField("selection")
    assert all(not r.detections for r in replies[1::2])  # blank frames
    assert sum(len(r.detections) for r in replies[0::2]) > 0


async def test_answers_match_unary_detect(vision):
    _server, stub, _, _ = vision
    frames = _frames(2, model=SLOW)
    replies = [reply async for reply in stub.StreamDetect(_send(frames))]
    unary = await stub.Detect(pb.DetectRequest(model=SLOW, image=frames[0].frame))
    assert list(replies[0].detections) == list(unary.detections) and replies[0].image_height == unary.image_height


async def test_block_reads_no_further_ahead_than_the_pending_frames(registry, store, start_server):
    """BLOCK: the server stops reading, so HTTP/2 flow control holds the client back; nothing is dropped.

    BDP probing is off on this server so that the transport's receive window stays at its initial size;
    with it on, gRPC grows the window on loopback and buffers a few more frames (bounded all the same).
    """
    server = build_server(
        ServerConfig(name="vision-flow", extra_options=(("grpc.http2.bdp_probe", 0),)),
        None,
        {SLOW: registry[SLOW]},
        store=store,
    )
    stub = vision_service_pb2_grpc.VisionServiceStub(await start_server(server))
    big = encode(Image.effect_noise((1024, 1024), 64).convert("RGB"))  # 2.6 MB of PNG, larger than the window
    messages = [pb.StreamDetectRequest(frame=common_pb2.Image(data=big), frame_index=i) for i in range(8)]
    messages[0].model = SLOW
    messages[0].max_pending_frames = 1
    messages[0].backpressure_policy = pb.BACKPRESSURE_POLICY_BLOCK
    sent: list[int] = []
    lead = []
    received = 0
    async for reply in stub.StreamDetect(_send(messages, sent)):
        assert reply.frame_index == received and not reply.dropped
        received += 1
        lead.append(len(sent) - received)
    assert received == 8
    # Taken from the client's generator but not yet answered: 1 pending + 1 in the model + 1 read and
    # waiting for room + 1 on its way through the transport. Without backpressure the generator would be
    # drained at once (a lead of 7 at the first answer).
    assert max(lead) <= 4, lead


@pytest.mark.parametrize("policy", [pb.BACKPRESSURE_POLICY_DROP_NEWEST, pb.BACKPRESSURE_POLICY_DROP_OLDEST])
async def test_drop_policies_answer_every_frame_once(vision, policy):
    _server, stub, _, _ = vision
    frames = _frames(20, model=SLOW, backpressure_policy=policy, max_pending_frames=1)
    replies = [reply async for reply in stub.StreamDetect(_send(frames))]
    assert sorted(r.frame_index for r in replies) == list(range(20))  # exactly one answer per frame
    processed = [r.frame_index for r in replies if not r.dropped]
    dropped = [r for r in replies if r.dropped]
    assert processed == sorted(processed) and len(processed) >= 1
    assert len(dropped) >= 10, "the client sends far faster than the model runs"
    assert all(not r.detections and r.image_width == 0 for r in dropped)
    assert all(r.image_width == 200 + r.frame_index for r in replies if not r.dropped)
    if policy == pb.BACKPRESSURE_POLICY_DROP_NEWEST:
        assert processed[0] == 0  # the first frame goes straight to the model
    else:
        assert processed[-1] == 19  # the newest frame is kept


async def test_a_changed_stream_setting_ends_the_stream(vision):
    _server, stub, _, _ = vision
    frames = _frames(3, model=FAST, score_threshold=0.3)
    frames[2].score_threshold = 0.9
    replies = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for reply in stub.StreamDetect(_send(frames, delay_s=0.2)):
            replies.append(reply)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame_index 2" in caught.value.details() and "stream setting" in caught.value.details()
    assert status_details(caught.value)[1]["BadRequest"].field_violations[0].field == "score_threshold"
    assert [r.frame_index for r in replies] == [0, 1]


async def test_a_bad_frame_ends_the_stream_with_its_index(vision):
    _server, stub, _, _ = vision
    frames = _frames(3, model=FAST)
    frames[1].frame.data = b"not an image at all"
    replies = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for reply in stub.StreamDetect(_send(frames, delay_s=0.2)):
            replies.append(reply)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame_index 1" in caught.value.details() and "frame.data" in caught.value.details()
    assert [r.frame_index for r in replies] == [0]


async def test_stream_arguments_are_checked_on_the_first_frame(vision):
    _server, stub, _, _ = vision
    for settings, field in (
        ({"model": FAST, "max_pending_frames": 0}, "max_pending_frames"),
        ({"model": FAST, "max_pending_frames": 100000}, "max_pending_frames"),
        ({}, "model"),
        ({"model": FAST, "iou_threshold": 2.0}, "iou_threshold"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            _ = [reply async for reply in stub.StreamDetect(_send(_frames(2, **settings)))]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, settings
        assert field in {v.field for v in status_details(caught.value)[1]["BadRequest"].field_violations}


async def test_an_empty_stream_ends_cleanly(vision):
    _server, stub, _, _ = vision
    assert [reply async for reply in stub.StreamDetect(_send([]))] == []


async def test_cancelling_a_stream_frees_its_slot(vision):
    server, stub, _, _ = vision
    runner = server.bindings[0].servicer.runner
    call = stub.StreamDetect(_send(_frames(20, model=SLOW), delay_s=0.01))
    first = await call.read()
    assert first.frame_index == 0 and runner.streams.active == 1
    call.cancel()
    for _ in range(100):
        if runner.streams.active == 0:
            break
        await asyncio.sleep(0.05)
    assert runner.streams.active == 0
    assert runner.admission.active == 0
