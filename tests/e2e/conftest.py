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
import yaml
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from aisemble.rpc.client import PLAINTEXT, REQUEST_ID_KEY, Peer, blocking_channel
from entrypoints.launcher import peer_of

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["llm", "nlp", "vision", "multimodal", "ensemble", "finetune"]
#: Tests that look back on the whole session (run after the others), and tests that stop the session's mesh
#: (run last of all), whatever the order asked.
LOOKS_BACK = ("test_using_the_mesh_leaves_the_checkout_as_it_was",)
STOPS_THE_MESH = ("test_ctrl_c_stops_everything",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests that stop the mesh to the end (starting a second mesh would cost about a minute)."""
    late = [item for item in items if item.name in LOOKS_BACK]
    last = [item for item in items if item.name in STOPS_THE_MESH]
    items[:] = [item for item in items if item.name not in (*LOOKS_BACK, *STOPS_THE_MESH)] + late + last


def _free_port(run: int = 1) -> int:
    """A free port on 127.0.0.1 (with run > 1: the first of that many consecutive free ports)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + run <= 65535 and all(_is_free(port + i) for i in range(1, run)):
            return port


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


#: The session mesh runs the shipped topology's replication: two gateways, and two NLP replicas (metrics on
#: consecutive ports) to prove the balancing and the failover.
NLP_REPLICAS = 2


@pytest.fixture(scope="session")
def mesh(tmp_path_factory):
    """`aisemble up` on free ports with the shipped models, from a private config folder: the registry, two
    gateways, every service (NLP with two replicas).

    Yields (plaintext channel to the first gateway, the `aisemble up` process, the config folder, its output so
    far). `git status` of the checkout before the mesh started is in <folder>/git-status-before.
    """
    folder = tmp_path_factory.mktemp("mesh-configs")
    (folder / "git-status-before").write_text(git_status())
    shutil.copy(REPO / "configs" / "models.yaml", folder / "models.yaml")
    shutil.copy(REPO / "configs" / "selection.yaml", folder / "selection.yaml")
    gateways = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    gateway = gateways[0]
    layout = {
        "gateway": {"addresses": gateways},
        "registry": {"addresses": [f"127.0.0.1:{_free_port()}"]},
        "http": {"address": f"127.0.0.1:{_free_port()}"},
        "services": {name: {"addresses": [f"127.0.0.1:{_free_port()}"]} for name in SERVICES},
    }
    layout["services"]["nlp"] = {
        "addresses": [f"127.0.0.1:{_free_port()}" for _ in range(NLP_REPLICAS)],
        "metrics_port": _free_port(run=NLP_REPLICAS),
    }
    (folder / "mesh.yaml").write_text(yaml.safe_dump(layout, sort_keys=False))
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


def git_status() -> str:
    """`git status --porcelain` of the checkout (untracked files too): what using the mesh must never change."""
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


def service_addresses(folder: Path) -> dict[str, str]:
    """server name -> its (first replica's) address, from the test's mesh.yaml: the registry, every service and
    the gateway."""
    layout = yaml.safe_load((folder / "mesh.yaml").read_text())
    found = {"registry": layout["registry"]["addresses"][0]}
    found.update({name: entry["addresses"][0] for name, entry in layout["services"].items()})
    found["gateway"] = layout["gateway"]["addresses"][0]
    return found


def replica_addresses(folder: Path, name: str) -> list[str]:
    """Every replica's address of one server ('gateway' or a service), from the test's mesh.yaml."""
    layout = yaml.safe_load((folder / "mesh.yaml").read_text())
    entry = layout["gateway"] if name == "gateway" else layout["services"][name]
    return list(entry["addresses"])


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
