"""Keeps the mesh's processes running: restarts with backoff, health checks, a crash budget, a state file."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisemble.config.mesh import SupervisorConfig
from aisemble.config.state import state_dir, write_atomically
from aisemble.rpc.client import Peer, blocking_channel

__all__ = ["HTTP_FACADE", "Child", "Supervisor", "processes_path", "read_processes"]

#: The one child that speaks HTTP (the OpenAI-compatible facade): checked with GET /health/live.
HTTP_FACADE = "http"

log = logging.getLogger(__name__)
_REPO = Path(__file__).resolve().parent.parent


def processes_path() -> Path:
    """<state>/mesh/processes.json: what `aisemble up` runs, for `aisemble status`."""
    return state_dir() / "mesh" / "processes.json"


def read_processes(path: Path | None = None) -> list[dict[str, object]]:
    """The launcher's last word on its processes (empty when no launcher wrote one)."""
    try:
        return list(json.loads((path or processes_path()).read_text(encoding="utf-8")).get("processes", []))
    except (FileNotFoundError, ValueError):
        return []


@dataclass
class Child:
    """One supervised server process and its history."""

    service: str
    address: str
    metrics_port: int
    models: tuple[str, ...]
    peer: Peer
    process: subprocess.Popen[bytes] | None = None
    state: str = "stopped"  # starting | serving | restarting | stopped
    started_at: float = 0.0
    served: bool = False
    restarts: int = 0
    crashes: deque[float] = field(default_factory=deque)
    last_exit: str = ""
    restart_at: float | None = None
    unhealthy_since: float | None = None
    _channel: grpc.Channel | None = None

    def spawn(self) -> None:
        """Start the process (`aisemble serve <service>`)."""
        command = [sys.executable, "-m", "entrypoints.cli", "serve", self.service, "--address", self.address]
        if self.metrics_port >= 0:
            command += ["--metrics-port", str(self.metrics_port)]
        self.process = subprocess.Popen(command, env=os.environ.copy(), cwd=_REPO)
        self.state, self.started_at, self.served = "starting", time.monotonic(), False
        self.restart_at = self.unhealthy_since = None
        self.close_channel()

    def healthy(self, timeout_s: float = 1.0) -> bool:
        """One grpc.health.v1 Check of the process (overall); for the HTTP facade, one GET /health/live (its
        liveness: while the gateways are down its /health is 503, and restarting it would mend nothing)."""
        if self.service == HTTP_FACADE:
            try:
                with urllib.request.urlopen(f"http://{self.address}/health/live", timeout=timeout_s) as reply:
                    return bool(reply.status == 200)
            except (OSError, ValueError):  # refused, timed out, 503 (HTTPError is an OSError)
                return False
        if self._channel is None:
            self._channel = blocking_channel(self.address, peer=self.peer)
        try:
            reply = health_pb2_grpc.HealthStub(self._channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def close_channel(self) -> None:
        """Drop the health channel (a restarted process gets a fresh one)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def kill(self) -> None:
        """SIGKILL the process (it stopped answering)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def to_dict(self) -> dict[str, object]:
        """The state file's record."""
        return {
            "service": self.service,
            "address": self.address,
            "pid": self.process.pid if self.process is not None else None,
            "state": self.state,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "models": list(self.models),
        }


class Supervisor:
    """Watches every child: a child that exits, or that stops answering health checks after it has served, is
    restarted with exponential backoff while the others keep serving; too many crashes of one child within
    the window and the supervisor gives up (`failed` is set: the launcher stops everything, exits 1)."""

    def __init__(self, children: list[Child], policy: SupervisorConfig, on_restart: Callable[[Child], None]) -> None:
        self.children = children
        self.policy = policy
        self.on_restart = on_restart
        self.failed = ""
        self._last_health = 0.0

    def write_state(self) -> None:
        """Record every child in the state file."""
        document = {"launcher_pid": os.getpid(), "processes": [c.to_dict() for c in self.children]}
        try:
            write_atomically(processes_path(), json.dumps(document, indent=2) + "\n")
        except OSError as exc:
            log.warning("could not write %s: %s", processes_path(), exc)

    def _crashed(self, child: Child, why: str) -> None:
        now = time.monotonic()
        child.crashes.append(now)
        while child.crashes and child.crashes[0] < now - self.policy.window_s:
            child.crashes.popleft()
        child.last_exit = why
        child.close_channel()
        if len(child.crashes) > self.policy.max_restarts:
            self.failed = (
                f"{child.service} on {child.address} {why}: {len(child.crashes)} crashes within "
                f"{self.policy.window_s:.0f} s (at most {self.policy.max_restarts} restarts): giving up"
            )
            return
        wait = min(self.policy.backoff_max_s, self.policy.backoff_initial_s * 2 ** (len(child.crashes) - 1))
        child.state, child.restart_at = "restarting", now + wait
        print(f"{child.service} on {child.address} {why}; restarting in {wait:.1f} s", flush=True)
        self.write_state()

    def step(self, start_timeout_s: float) -> None:
        """One round: notice exits and failed health, restart those whose backoff is over."""
        now = time.monotonic()
        check_health = now - self._last_health >= self.policy.health_interval_s
        if check_health:
            self._last_health = now
        for child in self.children:
            if self.failed:
                return
            process = child.process
            if child.state == "restarting":
                if child.restart_at is not None and now >= child.restart_at:
                    child.restarts += 1
                    child.spawn()
                    self.on_restart(child)
                    self.write_state()
                continue
            if process is not None and process.poll() is not None:
                self._crashed(child, f"exited with code {process.returncode}")
                continue
            if not check_health:
                continue
            if child.healthy():
                child.unhealthy_since = None
                if child.state == "starting":
                    child.state, child.served = "serving", True
                    if child.restarts:
                        print(f"{child.service} on {child.address} is back ({now - child.started_at:.1f} s)")
                    self.write_state()
            elif child.state == "starting":
                if now - child.started_at > start_timeout_s:
                    child.kill()
                    self._crashed(child, f"was not healthy within {start_timeout_s:.0f} s")
            else:
                child.unhealthy_since = child.unhealthy_since or now
                if now - child.unhealthy_since >= self.policy.unhealthy_after_s:
                    child.kill()
                    self._crashed(child, f"failed its health checks for {self.policy.unhealthy_after_s:.0f} s")

    def stop_all(self, grace_s: float = 15.0) -> None:
        """SIGTERM every child (the gateway first), wait for them, SIGKILL what is left."""
        running = [c for c in reversed(self.children) if c.process is not None and c.process.poll() is None]
        for child in running:
            child.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + grace_s
        for child in running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                child.kill()
        for child in self.children:
            child.state = "stopped"
            child.close_channel()
        self.write_state()
