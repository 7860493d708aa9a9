"""Segment through a real server with one's own YOLO-seg weights (built from Ultralytics' yaml, random weights),
brought into the store with StoreBuilder.import_files (`aisemble models import`).

Random weights find arbitrary things or nothing: these tests prove the code path and the response shape
(boxes, full-size PNG masks, outlines in original pixels), not what the model sees. YOLOv8's head starts with
class scores of about 1.6e-4 (its bias initialisation), hence the threshold of 1e-4.
"""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from aisemble.common.v1 import common_pb2
from aisemble.config.models import model_from_mapping
from aisemble.environment import apply_offline_defaults
from aisemble.rpc.server import ServerConfig
from aisemble.store.builder import StoreBuilder
from aisemble.store.model_store import ModelStore
from aisemble.vision.v1 import vision_service_pb2 as pb
from aisemble.vision.v1 import vision_service_pb2_grpc
from services.vision.app import build_server
from tests.assets.pictures import bus_jpg
from tests.conftest import status_details


@pytest.fixture(scope="module")
def seg_store(tmp_path_factory, store):
    """A model store holding YOLOv8n-seg weights imported as a user brings their own (a folder with a .pt), and
    the fall detector's model.pt imported as one file and registered, wrongly, as a segmentation model."""
    apply_offline_defaults()
    import torch
    from ultralytics import YOLO

    own = tmp_path_factory.mktemp("own-weights")
    (own / "my-seg").mkdir()
    torch.manual_seed(0)
    YOLO("yolov8n-seg.yaml").save(own / "my-seg" / "yolov8n-seg.pt")
    (own / "best.pt").write_bytes((store.root / "yolov8-fall" / "model.pt").read_bytes())
    root = tmp_path_factory.mktemp("seg-store")
    builder = StoreBuilder(root, {})
    builder.import_files("my-seg", own / "my-seg")
    builder.import_files("detect-only", own / "best.pt")
    return ModelStore(root)


@pytest.fixture(scope="module")
async def segmenter(seg_store):
    models = {
        "my-seg": model_from_mapping(
            "my-seg", {"task": "image-segmentation", "provider": "ultralytics", "model_path": "my-seg"}
        ),
        "my-seg-boxes": model_from_mapping(
            "my-seg-boxes", {"task": "object-detection", "provider": "ultralytics", "model_path": "my-seg"}
        ),
        "not-a-segmenter": model_from_mapping(
            "not-a-segmenter", {"task": "image-segmentation", "provider": "ultralytics", "model_path": "detect-only"}
        ),
    }
    server = build_server(ServerConfig(name="vision-seg"), None, models, store=seg_store)
    port = await server.start()
    assert server.model_host.models["my-seg"].state.value == "ready", server.model_host.models["my-seg"].error
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield server, vision_service_pb2_grpc.VisionServiceStub(channel)
    await channel.close()
    await server.stop(grace_s=0.5)


async def test_segment_returns_full_size_masks_and_outlines(segmenter):
    _server, stub = segmenter
    reply = await stub.Segment(
        pb.SegmentRequest(
            model="my-seg", image=common_pb2.Image(data=bus_jpg()), score_threshold=0.0001, max_detections=5
        )
    )
    assert (reply.image_width, reply.image_height) == (810, 1080)
    assert reply.selection.model == "my-seg"
    assert 1 <= len(reply.objects) <= 5  # seeded random weights find a few things at this threshold
    scores = [o.detection.score for o in reply.objects]
    assert scores == sorted(scores, reverse=True) and all(s >= 0.0001 for s in scores)
    for obj in reply.objects:
        assert (obj.mask.width, obj.mask.height) == (810, 1080)
        mask = Image.open(io.BytesIO(obj.mask.png))
        assert mask.format == "PNG" and mask.mode == "L" and mask.size == (810, 1080)
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
        assert obj.detection.class_name and 0 <= obj.detection.class_id < 80
        box = obj.detection.box
        assert 0 <= box.x_min <= box.x_max <= 810 and 0 <= box.y_min <= box.y_max <= 1080
        assert all(0 <= p.x <= 810 and 0 <= p.y <= 1080 for p in obj.polygon)


async def test_segment_with_auto_and_a_class_filter(segmenter):
    _server, stub = segmenter
    reply = await stub.Segment(
        pb.SegmentRequest(
            model="auto", image=common_pb2.Image(data=bus_jpg()), score_threshold=0.0001, class_names=["0"]
        )
    )
    assert reply.selection.automatic and reply.selection.model == "my-seg"
    assert all(o.detection.class_name == "0" for o in reply.objects)  # built from yaml: classes are numbered


async def test_seg_weights_also_serve_detection(segmenter):
    _server, stub = segmenter
    reply = await stub.Detect(
        pb.DetectRequest(model="my-seg-boxes", image=common_pb2.Image(data=bus_jpg()), score_threshold=0.0001)
    )
    assert (reply.image_width, reply.image_height) == (810, 1080)


async def test_detection_weights_registered_for_segmentation_are_refused_clearly(segmenter):
    server, stub = segmenter
    hosted = server.model_host.models["not-a-segmenter"]
    assert hosted.state.value == "failed" and "'detect' model" in hosted.error and "-seg" in hosted.error
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Segment(pb.SegmentRequest(model="not-a-segmenter", image=common_pb2.Image(data=bus_jpg())))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "'detect' model" in caught.value.details()
    assert status_details(caught.value)[1]["ErrorInfo"].reason == "MODEL_NOT_READY"
