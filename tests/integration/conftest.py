"""Integration fixtures: real servers on port 0 hosting real models, shared across the session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from services.llm.app import build_server as build_llm_server
from services.nlp.app import build_server as build_nlp_server

LLM_MODELS = ("smollm2-135m", "smollm2-135m-onnx")


@pytest.fixture(scope="session")
async def llm(registry, store):
    """One LLM server for the session hosting SmolLM2 on transformers and on ONNX Runtime.

    Yields (server, LlmServiceStub, channel).
    """
    models = {name: registry[name] for name in LLM_MODELS}
    server = build_llm_server(ServerConfig(name="llm"), None, models, store=store)
    port = await server.start()
    for name in LLM_MODELS:
        assert server.model_host.models[name].state.value == "ready", server.model_host.models[name].error
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield server, llm_service_pb2_grpc.LlmServiceStub(channel), channel
    await channel.close()
    await server.stop(grace_s=1)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServedProcess:
    """An `aisemble serve` process of a test: its address, and what it wrote to stderr once it has stopped."""

    def __init__(self, address: str, process: asyncio.subprocess.Process) -> None:
        self.address, self.process, self.stderr = address, process, ""


@contextlib.asynccontextmanager
async def registry_process(folder: Path, **env: str) -> AsyncIterator[ServedProcess]:
    """`aisemble serve registry` in its own process (plaintext, the shipped models.yaml, its state in `folder`),
    stopped (SIGTERM) at the end; `env` adds to the environment. Yields once it is listening."""
    address = f"127.0.0.1:{free_port()}"
    (folder / "mesh.yaml").write_text(
        f"gateway: {{address: 127.0.0.1:0}}\nregistry: {{addresses: ['{address}']}}\nsecurity: {{mtls: false}}\n"
    )
    shutil.copy(Path(__file__).parents[2] / "configs" / "models.yaml", folder / "models.yaml")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "entrypoints.cli", "serve", "registry", "--metrics-port", "-1"),
        env={**os.environ, "AISEMBLE_CONFIG_DIR": str(folder), "AISEMBLE_STATE_DIR": str(folder / "state"), **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    served = ServedProcess(address, process)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=60)
        yield served
    finally:
        if process.returncode is None:
            process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        served.stderr = stderr.decode(errors="replace")


def build_gateway(config, mesh, registry_path=None, store_root=None, registry_port=None, keys=None, **kwargs):
    """A gateway and the registry service it follows (the one writer of `registry_path`, default the session
    state's registry), in this process: the registry starts before the gateway and stops after it. The registry
    server is `gateway.registry_server` (registry_port: where it listens, default a free port). With a keys file
    of the test's own, both check it, and the gateway reaches the registry with a mesh key made in it."""
    from dataclasses import replace

    from aisemble.rpc.tls import registry_peer, service_server_credentials
    from gateway.app import build_server
    from services.registry.app import build_server as build_registry

    address = f"127.0.0.1:{registry_port or free_port()}"
    credentials = service_server_credentials(mesh.security, "registry")  # mTLS when the mesh has it
    registry = build_registry(
        ServerConfig(name="registry", address=address, credentials=credentials),
        mesh,
        path=registry_path,
        store_root=store_root,
        keys=keys,
    )
    peer = registry_peer(mesh, "gateway")
    if keys is not None:
        peer = replace(peer, api_key=keys.create("mesh", name="gateway-to-registry")[1])
    gateway = build_server(config, mesh, registry_target=address, registry_peer=peer, keys=keys, **kwargs)
    gateway.add_companion(registry)
    gateway.registry_server = registry
    return gateway


def write_registry(path, registry, names):
    """A models.yaml holding only the named entries of the shipped registry."""
    from services.registry.store import write_models_file

    write_models_file(path, [registry[name] for name in names])
    return path


async def wait_serving(gateway_server, models, seconds: float = 10.0) -> None:
    """Until the gateway's per-model health watches say every one of `models` is SERVING."""
    import asyncio

    for _ in range(int(seconds / 0.05)):
        if all(gateway_server.gateway.router.health_of(m) == "SERVING" for m in models):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{', '.join(models)} never became SERVING at the gateway")


def mesh_for(**services):
    """A MeshConfig whose services are at the given addresses (lists of host:port), reached in plaintext: the
    in-process test servers listen without TLS (tests/integration/test_security.py proves the mTLS hops)."""
    from aisemble.config.mesh import MeshConfig, ServiceEndpoint
    from aisemble.config.security import SecurityConfig

    return MeshConfig(
        gateway=ServiceEndpoint("gateway", ("127.0.0.1:0",)),
        services={name: ServiceEndpoint(name, tuple(addresses)) for name, addresses in services.items()},
        security=SecurityConfig(mtls=False),
    )


NLP_MODELS = ("minilm-l6", "minilm-l6-int8", "langid")


@pytest.fixture(scope="session")
async def nlp(registry, store):
    """One NLP server for the session hosting MiniLM-L6 (fp32 and int8 ONNX) and fastText lid.176.

    Yields (server, NlpServiceStub, channel).
    """
    models = {name: registry[name] for name in NLP_MODELS}
    server = build_nlp_server(ServerConfig(name="nlp"), None, models, store=store)
    port = await server.start()
    for name in NLP_MODELS:
        assert server.model_host.models[name].state.value == "ready", server.model_host.models[name].error
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield server, nlp_service_pb2_grpc.NlpServiceStub(channel), channel
    await channel.close()
    await server.stop(grace_s=1)


VISION_MODELS = ("yolov8-fall", "yolov8-fall-ultralytics", "nudenet", "ppocr-v4", "doc-orientation")


@pytest.fixture(scope="session")
async def vision(registry, store, tmp_path_factory):
    """One vision server for the session hosting the fall detector (ONNX Runtime and Ultralytics), NudeNet,
    PP-OCRv4 and the document-orientation classifier; file:// URIs are read under a temporary root.

    Yields (server, VisionServiceStub, channel, image_root).
    """
    from aisemble.inputs.images import ImageLimits
    from aisemble.vision.v1 import vision_service_pb2_grpc
    from services.vision.app import build_server as build_vision_server

    image_root = tmp_path_factory.mktemp("vision-images")
    models = {name: registry[name] for name in VISION_MODELS}
    server = build_vision_server(
        ServerConfig(name="vision"), None, models, store=store, images=ImageLimits(roots=(image_root,))
    )
    port = await server.start()
    for name in VISION_MODELS:
        assert server.model_host.models[name].state.value == "ready", server.model_host.models[name].error
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield server, vision_service_pb2_grpc.VisionServiceStub(channel), channel, image_root
    await channel.close()
    await server.stop(grace_s=1)
