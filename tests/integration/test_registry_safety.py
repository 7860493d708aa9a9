"""Registry writes cannot run code or leak secrets: refused at the gateway, and checked again by the services."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import pathlib
import pickle
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from aisemble.common.v1 import common_pb2
from aisemble.config.models import ModelSpec, model_from_mapping
from aisemble.llm.v1 import llm_service_pb2 as lpb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.registry_messages import spec_from_proto
from aisemble.rpc.server import AisembleServer, ServerConfig
from aisemble.store.builder import StoreBuilder
from aisemble.store.model_store import ModelStore
from aisemble.vision.v1 import vision_service_pb2 as vpb
from aisemble.vision.v1 import vision_service_pb2_grpc
from services.llm.app import build_server as build_llm
from services.vision.app import build_server as build_vision
from tests.assets.pictures import bus_jpg
from tests.conftest import status_details
from tests.integration.conftest import build_gateway, mesh_for, write_registry

# --- payloads: files that run code when a loader trusts them ---


class _Touch:
    """Unpickling this creates `path` (any other code could run instead): what a hostile .pt file holds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


def pickle_payload(marker: Path, size: int = 0) -> bytes:
    """A pickle that creates `marker` when loaded (torch.load without weights_only unpickles it), padded to size."""
    data = pickle.dumps(_Touch(marker), protocol=2)
    return data + b"\0" * max(0, size - len(data))


def yaml_payload(marker: Path) -> str:
    """A YAML file that creates the folder `marker` when read with yaml.Loader (RapidOCR's own reader)."""
    return f"Global: !!python/object/apply:os.mkdir [{str(marker)!r}]\n"


@dataclass
class Outside:
    """Hostile files outside the model store, and the markers that appear if any of them is loaded."""

    folder: Path
    pt: Path
    config: Path
    marker: Path

    def untouched(self) -> bool:
        return not self.marker.exists()


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    folder = tmp_path / "outside"
    folder.mkdir()
    marker = tmp_path / "PWNED"
    (folder / "payload.pt").write_bytes(pickle_payload(marker))
    (folder / "evil.yaml").write_text(yaml_payload(marker))
    return Outside(folder, folder / "payload.pt", folder / "evil.yaml", marker)


def test_the_payloads_are_live(tmp_path):
    """The files these tests refuse really run code when loaded the way the attack needs."""
    pickle.loads(pickle_payload(tmp_path / "from-pickle", 4096))
    yaml.load(yaml_payload(tmp_path / "from-yaml"), Loader=yaml.Loader)
    assert (tmp_path / "from-pickle").is_file() and (tmp_path / "from-yaml").is_dir()


@pytest.fixture
def own_store(tmp_path: Path) -> ModelStore:
    """A model store of this test's own: one small imported artifact, 'tiny'."""
    source = tmp_path / "tiny-source"
    source.mkdir()
    (source / "model.onnx").write_bytes(b"not really onnx")
    root = tmp_path / "models"
    StoreBuilder(root, {}).import_files("tiny", source)
    return ModelStore(root)


# --- a whole mesh: a gateway whose registry the llm and vision services follow ---


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mesh:
    gateway: Any
    registry: registry_service_pb2_grpc.ModelRegistryServiceStub
    llm: llm_service_pb2_grpc.LlmServiceStub
    vision_server: AisembleServer
    path: Path


@pytest.fixture
async def mesh(own_store, tmp_path, start_server) -> Mesh:
    target = f"127.0.0.1:{_free_port()}"
    llm = build_llm(ServerConfig(name="llm"), None, {}, store=own_store, registry_target=target)
    vision = build_vision(ServerConfig(name="vision"), None, {}, store=own_store, registry_target=target)
    await start_server(llm)
    await start_server(vision)
    path = write_registry(tmp_path / "models.yaml", {}, [])
    gateway = build_gateway(
        ServerConfig(name="gateway", address=target),
        mesh_for(llm=[f"127.0.0.1:{llm.port}"], vision=[f"127.0.0.1:{vision.port}"]),
        registry_path=path,
        store_root=own_store.root,
    )
    channel = await start_server(gateway)
    return Mesh(
        gateway,
        registry_service_pb2_grpc.ModelRegistryServiceStub(channel),
        llm_service_pb2_grpc.LlmServiceStub(channel),
        vision,
        path,
    )


def _model(name: str, task: int, provider: str, params: dict[str, Any], **fields: Any) -> rpb.Model:
    model = rpb.Model(name=name, task=task, provider=provider, **fields)
    model.params.update(params)
    return model


async def _refused(mesh: Mesh, model: rpb.Model, admin_metadata, field: str, reason: str) -> str:
    """Register `model`: INVALID_ARGUMENT naming `field`, models.yaml unchanged, the model nowhere."""
    before = mesh.path.read_bytes()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.registry.RegisterModel(rpb.RegisterModelRequest(model=model), metadata=admin_metadata)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    _, details = status_details(error)
    assert details["ErrorInfo"].reason == reason
    assert [v.field for v in details["BadRequest"].field_violations] == [field], error.details()
    assert mesh.path.read_bytes() == before
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await mesh.registry.GetModel(rpb.GetModelRequest(name=model.name), metadata=admin_metadata)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    return error.details()


# --- files named by a registry write ---


@pytest.mark.parametrize("how", ["absolute", "dot-dot", "home", "symlink"])
async def test_ultralytics_weights_outside_the_store_are_refused(mesh, own_store, outside, admin_metadata, how):
    weights = {
        "absolute": str(outside.pt),
        "dot-dot": "../../outside/payload.pt",  # from <store>/tiny: the payload itself
        "home": "~/payload.pt",
        "symlink": "evil.pt",
    }[how]
    (own_store.root / "tiny" / "evil.pt").symlink_to(outside.pt)
    assert (own_store.root / "tiny" / "../../outside/payload.pt").resolve() == outside.pt.resolve()
    model = _model(
        "hostile-yolo",
        common_pb2.TASK_OBJECT_DETECTION,
        "ultralytics",
        {"weights": weights},
        model_path="tiny",
    )
    details = await _refused(mesh, model, admin_metadata, "model.params.weights", "PATH_OUTSIDE_STORE")
    assert "model store" in details
    await asyncio.sleep(0.3)  # a follower that had been told would have started loading by now
    assert "hostile-yolo" not in mesh.vision_server.model_host.models
    assert outside.untouched()


async def test_a_model_path_linked_out_of_the_store_is_refused(mesh, own_store, outside, admin_metadata):
    (own_store.root / "escape").symlink_to(outside.folder)
    model = _model("linked-yolo", common_pb2.TASK_OBJECT_DETECTION, "ultralytics", {}, model_path="escape")
    await _refused(mesh, model, admin_metadata, "model.model_path", "PATH_OUTSIDE_STORE")
    assert outside.untouched()


async def test_a_rapidocr_config_outside_the_store_is_refused(mesh, outside, admin_metadata):
    model = _model("hostile-ocr", common_pb2.TASK_OCR, "rapidocr", {"config": str(outside.config)}, model_path="tiny")
    await _refused(mesh, model, admin_metadata, "model.params.config", "PATH_OUTSIDE_STORE")
    assert outside.untouched()


# --- the vision service checks again (a spec given to it directly, bypassing the registry) ---


def _yolo(name: str, model_path: str, **params: Any) -> ModelSpec:
    entry: dict[str, Any] = {"task": "object-detection", "provider": "ultralytics", "model_path": model_path}
    if params:
        entry["params"] = params
    return model_from_mapping(name, entry)


async def _failed_models(start_server, store: ModelStore, models: dict[str, ModelSpec]) -> dict[str, str]:
    """Start a vision server with `models`; each one's load error, after checking a call says the same."""
    server = build_vision(ServerConfig(name="vision-direct"), None, models, store=store)
    stub = vision_service_pb2_grpc.VisionServiceStub(await start_server(server))
    errors = {}
    for name in models:
        hosted = server.model_host.models[name]
        assert hosted.state.value == "failed", (name, hosted.state)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Detect(vpb.DetectRequest(model=name, image=common_pb2.Image(data=bus_jpg())))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and hosted.error in caught.value.details()
        errors[name] = hosted.error
    return errors


async def test_the_vision_service_refuses_weights_outside_the_model_folder(own_store, outside, start_server):
    (own_store.root / "tiny" / "evil.pt").symlink_to(outside.pt)
    models = {
        "abs": _yolo("abs", "tiny", weights=str(outside.pt)),
        "up": _yolo("up", "tiny", weights="../../outside/payload.pt"),
        "link": _yolo("link", "tiny", weights="evil.pt"),
        "path": ModelSpec(
            name="path", task="object-detection", provider="ultralytics", service="vision", model_path=str(outside.pt)
        ),
    }
    errors = await _failed_models(start_server, own_store, models)
    for name, error in errors.items():
        assert "is outside" in error and "inside the model store only" in error, (name, error)
    assert outside.untouched()


async def test_weights_without_a_manifest_are_not_unpickled(own_store, outside, start_server):
    bare = own_store.root / "bare"
    bare.mkdir()
    (bare / "yolo.pt").write_bytes(outside.pt.read_bytes())  # dropped into the store by hand, no manifest
    errors = await _failed_models(start_server, own_store, {"bare": _yolo("bare", "bare")})
    assert "'bare' has no manifest.json" in errors["bare"] and "aisemble models import" in errors["bare"]
    assert outside.untouched()


async def test_weights_that_no_longer_match_their_manifest_are_not_unpickled(
    own_store, outside, tmp_path, start_server
):
    size = 4096
    source = tmp_path / "honest"
    source.mkdir()
    (source / "model.pt").write_bytes(b"\0" * size)
    StoreBuilder(own_store.root, {}).import_files("tampered", source)
    # Swapped afterwards for a payload of the same size: the size check passes, the checksum does not.
    (own_store.root / "tampered" / "model.pt").write_bytes(pickle_payload(outside.marker, size))
    assert own_store.verify("tampered", deep=False).ok and not own_store.verify("tampered", deep=True).ok
    errors = await _failed_models(start_server, own_store, {"tampered": _yolo("tampered", "tampered")})
    assert "does not match the sha256" in errors["tampered"] and "aisemble models import" in errors["tampered"]
    assert outside.untouched()


async def test_a_rapidocr_config_is_read_as_plain_data_only(store, own_store, outside, tmp_path, start_server):
    source = tmp_path / "ocr-source"
    source.mkdir()
    for onnx in (store.root / "ppocr-v4").glob("*.onnx"):
        (source / onnx.name).symlink_to(onnx)  # import copies the files themselves
    (source / "config.yaml").write_text(yaml_payload(outside.marker))
    StoreBuilder(own_store.root, {}).import_files("ocr-evil", source)
    spec = model_from_mapping("ocr-evil", {"task": "ocr", "provider": "rapidocr", "model_path": "ocr-evil"})
    server = build_vision(ServerConfig(name="vision-ocr"), None, {"ocr-evil": spec}, store=own_store)
    await start_server(server)
    hosted = server.model_host.models["ocr-evil"]
    assert hosted.state.value == "failed" and "is not plain YAML data" in hosted.error, hosted.error
    assert outside.untouched()


# --- endpoints and secrets ---


class Listener:
    """A real HTTP server in a thread recording every connection and request it gets (it answers 503)."""

    def __init__(self, host: str) -> None:
        self.connections: list[str] = []
        self.requests: list[dict[str, Any]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                listener.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                data = b'{"error": {"message": "recorded", "type": "server_error"}}'
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                listener.connections.append(str(client_address))
                return True

        self.server = Server((host, 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        self.connections.clear()
        self.requests.clear()

    def heard(self, secret: str) -> bool:
        return any(secret in repr(r) for r in self.requests)


@pytest.fixture
def listener():
    server = Listener("0.0.0.0")
    yield server
    server.close()


def _lan_address() -> str | None:
    """This machine's non-loopback IPv4 address, if it has one (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    ip = ipaddress.ip_address(address)
    return None if ip.is_loopback or ip.is_unspecified else address


def _probe(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as answer:
        return int(answer.code)


def _remote(name: str, endpoint: str, task: int = common_pb2.TASK_TEXT_GENERATION, **params: Any) -> rpb.Model:
    return _model(name, task, "openai", params, model_id="gpt-x", endpoint=endpoint, max_output_tokens=16)


async def _not_served(mesh: Mesh, name: str, admin_metadata) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.llm.Complete(
            lpb.CompleteRequest(model=name, prompt="Hi", max_output_tokens=4), metadata=admin_metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_endpoint_beyond_loopback_is_refused_and_hears_nothing(mesh, listener, admin_metadata, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-stay-home")
    address = _lan_address()
    endpoints = ["http://exfil.invalid/v1", "https://api.openai.com/v1"]
    if address is not None:
        # The listener is reachable at that address: what it would have heard, it would have recorded.
        assert await asyncio.to_thread(_probe, f"http://{address}:{listener.port}/probe") == 503
        assert [r["path"] for r in listener.requests] == ["/probe"]
        listener.clear()
        endpoints.insert(0, f"http://{address}:{listener.port}/v1")
    for i, endpoint in enumerate(endpoints):
        details = await _refused(
            mesh,
            _remote(f"exfil-{i}", endpoint, api_key_env="OPENAI_API_KEY"),
            admin_metadata,
            "model.endpoint",
            "PROVIDER_NOT_ALLOWED",
        )
        assert "security.providers.endpoints" in details
        await _not_served(mesh, f"exfil-{i}", admin_metadata)
    images = _remote("exfil-images", endpoints[0], common_pb2.TASK_IMAGE_GENERATION)
    await _refused(mesh, images, admin_metadata, "model.endpoint", "PROVIDER_NOT_ALLOWED")
    await asyncio.sleep(0.3)
    assert listener.connections == [] and listener.requests == []


async def test_a_secret_env_is_refused_even_for_loopback(mesh, listener, admin_metadata, monkeypatch, start_server):
    monkeypatch.setenv("SOME_SECRET", "s3cret-do-not-send")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-allowed-one")
    endpoint = f"http://127.0.0.1:{listener.port}/v1"
    details = await _refused(
        mesh,
        _remote("leaky", endpoint, api_key_env="SOME_SECRET"),
        admin_metadata,
        "model.params.api_key_env",
        "PROVIDER_NOT_ALLOWED",
    )
    assert "security.providers.api_key_envs" in details and "s3cret" not in details
    await _not_served(mesh, "leaky", admin_metadata)
    await asyncio.sleep(0.3)
    assert listener.connections == [] and listener.requests == []

    # With the allowed variable the registry takes the same endpoint, and a service hosting that entry calls
    # it: the listener hears that call, with the allowed key only, never the secret.
    allowed = _remote("allowed", endpoint, api_key_env="OPENAI_API_KEY")
    await mesh.registry.RegisterModel(
        rpb.RegisterModelRequest(model=allowed, validate_only=True), metadata=admin_metadata
    )
    server = build_llm(ServerConfig(name="llm-direct"), None, {"allowed": spec_from_proto(allowed)})
    stub = llm_service_pb2_grpc.LlmServiceStub(await start_server(server))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(lpb.CompleteRequest(model="allowed", prompt="Hi", max_output_tokens=4))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()  # the listener's 503
    assert [r["path"] for r in listener.requests] == ["/v1/completions"]
    headers = {key.lower(): value for key, value in listener.requests[0]["headers"].items()}
    assert headers["authorization"] == "Bearer sk-the-allowed-one"
    assert not listener.heard(os.environ["SOME_SECRET"])
