"""Runs the mesh: one process per service replica (and the gateway), health-gated start, supervision, clean stop."""

from __future__ import annotations

import functools
import logging
import signal
import sys
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisemble.config.mesh import MeshConfig
from aisemble.config.models import ModelSpec
from aisemble.rpc.client import PLAINTEXT, Peer, blocking_channel
from aisemble.rpc.tls import gateway_peer, service_peer
from aisemble.security.bootstrap import ensure_certificates, ensure_local_key
from entrypoints.supervisor import HTTP_FACADE, Child, Supervisor

__all__ = ["SERVICE_APPS", "mesh_hosts", "peer_of", "prepare_security", "run_mesh", "wait_healthy"]

log = logging.getLogger(__name__)

#: service name -> the module whose `build_server(...)` builds it.
SERVICE_APPS = {
    "registry": "services.registry.app",
    "llm": "services.llm.app",
    "nlp": "services.nlp.app",
    "vision": "services.vision.app",
    "ensemble": "services.ensemble.app",
    "multimodal": "services.multimodal.app",
    "finetune": "services.finetune.app",
    "gateway": "gateway.app",
}


def mesh_hosts(mesh: MeshConfig) -> list[str]:
    """Every host name or IP the mesh's addresses use (the certificates name them all)."""
    addresses = [a.removeprefix("dns:///") for e in mesh.endpoints() for a in e.addresses]
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


def run_mesh(mesh: MeshConfig, models: dict[str, ModelSpec], start_timeout_s: float = 600.0) -> int:
    """Start the registry, every service replica of the mesh, every gateway replica, then the OpenAI-compatible
    HTTP facade, each health-gated;
    then supervise them (restarts with backoff, see SupervisorConfig) until Ctrl-C / SIGTERM (exit 0) or until
    one process crashes too often (everything is stopped, exit 1)."""
    children: list[Child] = []
    for endpoint in mesh.endpoints():
        hosted = tuple(m.name for m in models.values() if m.service == endpoint.name)
        for index, address in enumerate(endpoint.addresses):
            port = endpoint.metrics_port + index if endpoint.metrics_port >= 0 else -1
            children.append(Child(endpoint.name, address, port, hosted, Peer()))
    children.append(Child(HTTP_FACADE, mesh.http_address, -1, (), Peer()))

    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    prepare_security(mesh)
    for child in children:
        child.peer = peer_of(mesh, child.service)
    restarts = _restart_metrics(mesh.supervisor.metrics_port, children)
    supervisor = Supervisor(children, mesh.supervisor, on_restart=restarts)
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            print(f"starting {child.service} on {child.address} ...", flush=True)
            child.spawn()
            supervisor.write_state()
            deadline = time.monotonic() + start_timeout_s
            while not stopping and time.monotonic() < deadline:
                if child.process is not None and child.process.poll() is not None:
                    raise RuntimeError(f"{child.service} exited with code {child.process.returncode} while starting")
                if child.healthy(timeout_s=1.0):
                    child.state, child.served = "serving", True
                    break
                time.sleep(0.25)
            else:
                if not stopping:
                    raise RuntimeError(
                        f"{child.service} on {child.address} was not healthy within {start_timeout_s:.0f} s"
                    )
            if stopping:
                break
        supervisor.write_state()
        if not stopping:
            _print_table(children)
            print("\nCtrl-C stops the mesh.", flush=True)
        while not stopping and not supervisor.failed:
            supervisor.step(start_timeout_s)
            time.sleep(0.25)
        if supervisor.failed:
            print(f"error: {supervisor.failed}; stopping the mesh", file=sys.stderr, flush=True)
            return 1
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        supervisor.stop_all()
        if children:
            print("mesh stopped", flush=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _is_serving(child: Child) -> float:
    return float(child.state == "serving")


def _restart_metrics(port: int, children: list[Child]) -> Callable[[Child], None]:
    """Prometheus on `port` (none when -1): restarts per process, and whether each is up. Returns the counter's
    increment for one child."""
    if port < 0:
        return lambda _child: None
    from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

    registry = CollectorRegistry()
    counter = Counter(
        "aisemble_process_restarts", "Restarts of a mesh process.", ["service", "address"], registry=registry
    )
    up = Gauge("aisemble_process_up", "Whether a mesh process is serving.", ["service", "address"], registry=registry)
    for child in children:
        counter.labels(child.service, child.address)
        up.labels(child.service, child.address).set_function(functools.partial(_is_serving, child))
    start_http_server(port, addr="127.0.0.1", registry=registry)

    def count(child: Child) -> None:
        counter.labels(child.service, child.address).inc()

    return count


def _print_table(children: list[Child]) -> None:
    print("\nserving:")
    print(f"  {'service':<10} {'address':<22} models")
    for child in children:
        print(f"  {child.service:<10} {child.address:<22} {', '.join(child.models) or '-'}")
