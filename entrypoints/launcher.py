"""Runs the mesh: one process per service replica (and the gateway), health-gated start, clean stop."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisemble.config.mesh import MeshConfig
from aisemble.config.models import ModelSpec
from aisemble.rpc.client import PLAINTEXT, Peer, blocking_channel
from aisemble.rpc.tls import gateway_peer, service_peer
from aisemble.security.bootstrap import ensure_certificates, ensure_local_key

__all__ = ["SERVICE_APPS", "MeshProcess", "mesh_hosts", "peer_of", "prepare_security", "run_mesh", "wait_healthy"]

log = logging.getLogger(__name__)

#: service name -> the module whose `build_server(...)` builds it.
SERVICE_APPS = {
    "llm": "services.llm.app",
    "nlp": "services.nlp.app",
    "vision": "services.vision.app",
    "ensemble": "services.ensemble.app",
    "multimodal": "services.multimodal.app",
    "finetune": "services.finetune.app",
    "gateway": "gateway.app",
}


@dataclass
class MeshProcess:
    """One started server process."""

    service: str
    address: str
    process: subprocess.Popen[bytes]
    models: tuple[str, ...]


def mesh_hosts(mesh: MeshConfig) -> list[str]:
    """Every host name or IP the mesh's addresses use (the certificates name them all)."""
    addresses = [*mesh.gateway.addresses, *(a for e in mesh.services.values() for a in e.addresses)]
    return sorted({a.rpartition(":")[0].strip("[]") for a in addresses} - {"", "0.0.0.0", "::"})


def prepare_security(mesh: MeshConfig) -> None:
    """What a first start needs: the mesh CA and certificates (with mTLS), the local admin and mesh keys."""
    security = mesh.security
    if security.mtls or (security.gateway_tls is not None and security.gateway_tls.ca_file is None):
        ensure_certificates(security.certificates(), mesh_hosts(mesh))
    admin, made = ensure_local_key("admin")
    if made:
        print(f"made the local admin key: {admin} (mode 0600; the CLI reads it)", flush=True)
    ensure_local_key("mesh")


def peer_of(mesh: MeshConfig, service: str) -> Peer:
    """How the launcher (and the CLI) reach one of the mesh's servers: as `cli`, over the mesh's TLS."""
    if service == "gateway":
        return gateway_peer(mesh.security, "cli", None)
    return service_peer(mesh.security, service, "cli")


def wait_healthy(address: str, timeout_s: float, service: str = "", peer: Peer = PLAINTEXT) -> bool:
    """Poll grpc.health.v1 Check until SERVING or the timeout."""
    deadline = time.monotonic() + timeout_s
    with blocking_channel(address, peer=peer) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.25)
    return False


def _spawn(service: str, address: str, metrics_port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "entrypoints.cli", "serve", service, "--address", address]
    if metrics_port >= 0:
        command += ["--metrics-port", str(metrics_port)]
    return subprocess.Popen(command, env=os.environ.copy(), cwd=Path(__file__).resolve().parent.parent)


def run_mesh(mesh: MeshConfig, models: dict[str, ModelSpec], start_timeout_s: float = 600.0) -> int:
    """Start every service replica of the mesh, then the gateway; wait for Ctrl-C / SIGTERM; stop all."""
    plan: list[tuple[str, str, int, tuple[str, ...]]] = []
    for name, endpoint in mesh.services.items():
        hosted = tuple(m.name for m in models.values() if m.service == name)
        for index, address in enumerate(endpoint.addresses):
            port = endpoint.metrics_port + index if endpoint.metrics_port >= 0 else -1
            plan.append((name, address, port, hosted))
    plan.append(("gateway", mesh.gateway.addresses[0], mesh.gateway.metrics_port, ()))

    processes: list[MeshProcess] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    prepare_security(mesh)
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name, address, metrics_port, hosted in plan:
            print(f"starting {name} on {address} ...", flush=True)
            processes.append(MeshProcess(name, address, _spawn(name, address, metrics_port), hosted))
            deadline = time.monotonic() + start_timeout_s
            while not stopping and time.monotonic() < deadline:
                if processes[-1].process.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {processes[-1].process.returncode} while starting")
                if wait_healthy(address, timeout_s=1.0, peer=peer_of(mesh, name)):
                    break
            else:
                if not stopping:
                    raise RuntimeError(f"{name} on {address} was not healthy within {start_timeout_s:.0f} s")
            if stopping:
                break
        if not stopping:
            _print_table(processes)
            print("\nCtrl-C stops the mesh.", flush=True)
        while not stopping:
            for proc in processes:
                if proc.process.poll() is not None:
                    print(f"{proc.service} on {proc.address} exited with code {proc.process.returncode}", flush=True)
                    stopping = True
            time.sleep(0.5)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop_all(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_table(processes: list[MeshProcess]) -> None:
    print("\nserving:")
    print(f"  {'service':<10} {'address':<22} models")
    for proc in processes:
        print(f"  {proc.service:<10} {proc.address:<22} {', '.join(proc.models) or '-'}")


def _stop_all(processes: list[MeshProcess], grace_s: float = 15.0) -> None:
    for proc in reversed(processes):
        if proc.process.poll() is None:
            proc.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in processes:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            proc.process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait()
    if processes:
        print("mesh stopped", flush=True)
