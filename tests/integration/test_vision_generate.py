"""GenerateImage through the OpenAI backend against a local OpenAI-compatible /v1/images/generations endpoint.

The endpoint (stdlib http.server, started here) speaks the Images API wire format and draws real PNGs with PIL;
a few model names trigger faults on purpose. Nothing leaves the machine.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import grpc
import pytest
from PIL import Image, ImageDraw

from aisemble.config.models import model_from_mapping
from aisemble.rpc.server import ServerConfig
from aisemble.vision.v1 import vision_service_pb2 as pb
from aisemble.vision.v1 import vision_service_pb2_grpc
from services.vision.app import build_server
from tests.conftest import status_details
from tests.http_endpoint import JsonHandler, LocalEndpoint

KEY = "sk-images-test-7d2e"


def _png(width: int, height: int, prompt: str, index: int) -> bytes:
    picture = Image.new("RGB", (width, height), (40 * index % 256, 120, 200))
    ImageDraw.Draw(picture).text((4, 4), prompt[:20], fill="white")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class _Handler(JsonHandler):
    endpoint: ImagesEndpoint
    error_code_is_type = False

    def do_POST(self) -> None:
        body = self._read_json()
        if self.path != "/v1/images/generations":
            return self._error(404, f"no route {self.path}", "invalid_request_error")
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self._error(401, "Incorrect API key provided", "invalid_request_error")
        self.endpoint.requests.append(body)
        model = body.get("model")
        if model == "rate-limited":
            return self._error(429, "Rate limit reached for images", "requests", {"Retry-After": "7"})
        if model == "broken":
            return self._error(500, "The server had an error", "server_error")
        width, height = (int(v) for v in body.get("size", "256x256").split("x"))
        images = []
        for index in range(int(body.get("n", 1))):
            if model == "url-only":
                images.append({"url": "https://example.invalid/image.png"})
            else:
                data = base64.b64encode(_png(width, height, body["prompt"], index)).decode()
                images.append({"b64_json": data, "revised_prompt": f"{body['prompt']}, in soft light"})
        self._json(200, {"created": 1760000000, "data": images})


class ImagesEndpoint(LocalEndpoint):
    """POST /v1/images/generations on 127.0.0.1:<free port>; records what it was sent."""

    handler = _Handler

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        super().__init__()


@pytest.fixture(scope="module")
def endpoint():
    with ImagesEndpoint() as images:
        yield images


@pytest.fixture
async def generator(endpoint, start_server, monkeypatch):
    monkeypatch.setenv("AISEMBLE_TEST_IMAGES_KEY", KEY)
    monkeypatch.setenv("AISEMBLE_TEST_WRONG_KEY", "sk-wrong")

    def remote(name: str, model_id: str, endpoint_url: str = endpoint.base_url, **params: Any):
        entry = {
            "task": "image-generation",
            "provider": "openai",
            "endpoint": endpoint_url,
            "model_id": model_id,
            "params": {"api_key_env": "AISEMBLE_TEST_IMAGES_KEY", **params},
        }
        return model_from_mapping(name, entry)

    models = {
        "local-images": remote("local-images", "pixels-1", sizes=["256x256", "64x32"], seed_param="seed"),
        "wrong-key": remote("wrong-key", "pixels-1", api_key_env="AISEMBLE_TEST_WRONG_KEY"),
        "no-key": remote("no-key", "pixels-1", api_key_env="AISEMBLE_TEST_UNSET_KEY"),
        "limited": remote("limited", "rate-limited"),
        "broken": remote("broken", "broken"),
        "url-only": remote("url-only", "url-only"),
        "down": remote("down", "pixels-1", endpoint_url="http://127.0.0.1:9/v1"),
    }
    server = build_server(ServerConfig(name="vision-images"), None, models)
    return vision_service_pb2_grpc.VisionServiceStub(await start_server(server))


async def _fails(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def test_generate_image_returns_pngs_of_the_requested_size(generator, endpoint):
    reply = await generator.GenerateImage(
        pb.GenerateImageRequest(model="local-images", prompt="a red bus at dusk", width=64, height=32, n=2, seed=7)
    )
    assert len(reply.images) == 2
    for image in reply.images:
        assert image.mime_type == "image/png"
        picture = Image.open(io.BytesIO(image.data))
        assert picture.format == "PNG" and picture.size == (64, 32)
        assert image.revised_prompt == "a red bus at dusk, in soft light"
    assert reply.selection.model == "local-images"
    sent = endpoint.requests[-1]
    assert sent["model"] == "pixels-1" and sent["prompt"] == "a red bus at dusk"
    assert sent["n"] == 2 and sent["size"] == "64x32" and sent["response_format"] == "b64_json"
    assert sent["seed"] == 7


async def test_defaults_and_auto(generator, endpoint):
    reply = await generator.GenerateImage(pb.GenerateImageRequest(model="auto", prompt="a lighthouse"))
    assert len(reply.images) == 1 and reply.selection.automatic
    assert "size" not in endpoint.requests[-1] and endpoint.requests[-1]["n"] == 1


async def test_invalid_requests_are_refused_before_the_endpoint(generator, endpoint):
    before = len(endpoint.requests)
    cases = [
        (pb.GenerateImageRequest(model="local-images", prompt="   "), "prompt"),
        (pb.GenerateImageRequest(model="local-images", prompt="x", width=300, height=300), "width"),
        (pb.GenerateImageRequest(model="local-images", prompt="x", width=256), "width"),
        (pb.GenerateImageRequest(model="local-images", prompt="x", n=5), "n"),
        (pb.GenerateImageRequest(model="local-images", prompt="x", n=-1), "n"),
        (pb.GenerateImageRequest(model="local-images", prompt="x" * 5000), "prompt"),
    ]
    for request, field in cases:
        error = await _fails(generator.GenerateImage(request), grpc.StatusCode.INVALID_ARGUMENT)
        assert field in {v.field for v in status_details(error)[1]["BadRequest"].field_violations}, request
    assert len(endpoint.requests) == before


async def test_endpoint_errors_map_to_statuses(generator):
    error = await _fails(
        generator.GenerateImage(pb.GenerateImageRequest(model="wrong-key", prompt="x")), grpc.StatusCode.UNAUTHENTICATED
    )
    assert KEY not in error.details() and "sk-wrong" not in error.details()
    error = await _fails(
        generator.GenerateImage(pb.GenerateImageRequest(model="limited", prompt="x")),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert status_details(error)[1]["RetryInfo"].retry_delay.seconds == 7
    await _fails(
        generator.GenerateImage(pb.GenerateImageRequest(model="broken", prompt="x")), grpc.StatusCode.UNAVAILABLE
    )
    await _fails(
        generator.GenerateImage(pb.GenerateImageRequest(model="down", prompt="x")), grpc.StatusCode.UNAVAILABLE
    )
    error = await _fails(
        generator.GenerateImage(pb.GenerateImageRequest(model="url-only", prompt="x")), grpc.StatusCode.UNAVAILABLE
    )
    assert "b64_json" in error.details()
    error = await _fails(
        generator.GenerateImage(pb.GenerateImageRequest(model="no-key", prompt="x")), grpc.StatusCode.UNAVAILABLE
    )
    assert "AISEMBLE_TEST_UNSET_KEY" in error.details()


async def test_bad_params_fail_the_load_and_calls_say_which(endpoint, start_server, monkeypatch):
    monkeypatch.setenv("AISEMBLE_TEST_IMAGES_KEY", KEY)
    entry = {
        "task": "image-generation",
        "provider": "openai",
        "endpoint": endpoint.base_url,
        "model_id": "pixels-1",
        "params": {"api_key_env": "AISEMBLE_TEST_IMAGES_KEY", "sizes": ["big"], "max_images": 0},
    }
    server = build_server(ServerConfig(name="vision-images-bad"), None, {"bad": model_from_mapping("bad", entry)})
    stub = vision_service_pb2_grpc.VisionServiceStub(await start_server(server))
    hosted = server.model_host.models["bad"]
    assert hosted.state.value == "failed" and "params.max_images" in hosted.error
    error = await _fails(
        stub.GenerateImage(pb.GenerateImageRequest(model="bad", prompt="x")), grpc.StatusCode.UNAVAILABLE
    )
    assert "params.sizes: each size must be WIDTHxHEIGHT" in error.details()
    assert "params.max_images: must be an integer >= 1 (got 0)" in error.details()
