"""End-to-end fixtures: one mesh per session, started with `aisemble up` as a user starts it, and ways to reach it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from aisemble.rpc.client import PLAINTEXT, REQUEST_ID_KEY, Peer, blocking_channel
from entrypoints.launcher import peer_of

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["llm", "nlp", "vision", "multimodal", "ensemble", "finetune"]
#: Tests that stop the session's mesh: they run after every other test of the session, whatever the order asked.
STOPS_THE_MESH = ("test_ctrl_c_stops_everything",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests that stop the mesh to the end (starting a second mesh would cost about a minute)."""
    last = [item for item in items if item.name in STOPS_THE_MESH]
    items[:] = [item for item in items if item.name not in STOPS_THE_MESH] + last


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mesh(tmp_path_factory):
    """`aisemble up` on free ports with the shipped models, from a private config folder.

    Yields (plaintext channel to the gateway, the `aisemble up` process, the config folder, its output so far).
    """
    folder = tmp_path_factory.mktemp("mesh-configs")
    shutil.copy(REPO / "configs" / "models.yaml", folder / "models.yaml")
    shutil.copy(REPO / "configs" / "selection.yaml", folder / "selection.yaml")
    gateway = f"127.0.0.1:{_free_port()}"
    lines = [f"gateway: {{address: '{gateway}'}}", "services:"]
    lines += [f"  {name}: {{addresses: ['127.0.0.1:{_free_port()}']}}" for name in SERVICES]
    (folder / "mesh.yaml").write_text("\n".join(lines) + "\n")
    # Its own state directory: `aisemble up` makes the mesh CA, the certificates and the keys there.
    env = {
        **os.environ,
        "AISEMBLE_CONFIG_DIR": str(folder),
        "AISEMBLE_STATE_DIR": str(folder / "state"),
        "PYTHONUNBUFFERED": "1",
    }
    log = (folder / "mesh.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "up"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and process.poll() is None:
        if "Ctrl-C stops the mesh." in (folder / "mesh.log").read_text():
            break
        time.sleep(1)
    output = (folder / "mesh.log").read_text()
    assert process.poll() is None and "Ctrl-C stops the mesh." in output, output[-3000:]
    channel = grpc.insecure_channel(gateway)
    yield channel, process, folder, output
    channel.close()
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    log.close()


def service_addresses(folder: Path) -> dict[str, str]:
    """service name -> its address, from the test's mesh.yaml (the gateway's included)."""
    found = {}
    for line in (folder / "mesh.yaml").read_text().splitlines():
        if "127.0.0.1" in line:
            name = line.split(":", 1)[0].strip()
            found[name] = line.split("'")[1]
    return found


def state_mesh(folder: Path):
    """The test mesh's MeshConfig, pointing at the certificates `aisemble up` made in its state folder."""
    from aisemble.config.mesh import load_mesh
    from aisemble.config.security import SecurityConfig

    mesh = load_mesh(folder / "mesh.yaml")
    return replace(mesh, security=SecurityConfig(certs_dir=folder / "state" / "certs"))


def admin_key(folder: Path) -> str:
    """The admin key `aisemble up` made in the mesh's state folder."""
    return (folder / "state" / "credentials" / "admin.key").read_text().strip()


@dataclass
class Target:
    """One server of the mesh: how to reach it, and the contracts its reflection lists."""

    name: str
    address: str
    peer: Peer
    channel: grpc.Channel
    services: dict[str, ServiceDescriptor] = field(default_factory=dict)


@pytest.fixture(scope="session")
def targets(mesh) -> Iterator[dict[str, Target]]:
    """The gateway (plaintext, as a user reaches it) and every service port (mTLS as `cli`), reflection read."""
    folder = mesh[2]
    config = state_mesh(folder)
    found = {}
    for name, address in service_addresses(folder).items():
        peer = PLAINTEXT if name == "gateway" else peer_of(config, name)
        target = Target(name, address, peer, blocking_channel(address, peer=peer))
        database = ProtoReflectionDescriptorDatabase(target.channel)
        pool = descriptor_pool.DescriptorPool(database)
        target.services = {service: pool.FindServiceByName(service) for service in database.get_services()}
        found[name] = target
    yield found
    for target in found.values():
        target.channel.close()


def call_metadata(key: str, folder: Path, request_id: str) -> list[tuple[str, str]]:
    """A call's metadata: its request id and a key: "admin" (the real one), "bogus", "malformed" or "none"."""
    metadata = [(REQUEST_ID_KEY, request_id)]
    if key == "admin":
        metadata.append(("authorization", f"Bearer {admin_key(folder)}"))
    elif key == "bogus":
        metadata.append(("authorization", "Bearer ais_fuzz000_" + "x" * 43))
    elif key == "malformed":
        metadata.append(("authorization", "Basic Zm9vOmJhcg=="))
    return metadata
