"""Small helpers shared by the benchmarks: timing statistics and table printing."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Mesh", "free_port", "median", "percentile", "print_table"]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of values, by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    """The median."""
    return statistics.median(values)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (pastes straight into the README)."""
    cells = [[str(h) for h in headers], *[[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("\n".join(lines), flush=True)


REPO = Path(__file__).resolve().parent.parent


def timed_in_threads(work: Callable[[int], None], count: int) -> float:
    """Seconds for work(0) .. work(count - 1), each in its own thread, all started together."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mesh:
    """The registry, some services and a gateway as separate processes on free ports, from a private config and
    state folder (the registry is seeded from the folder's models.yaml).

    `models` are registry names from configs/models.yaml (and `extra` more ModelSpecs, e.g. one with other params);
    each service in `services` hosts its models.
    secure: the services listen with mTLS only (the gateway and the benchmark present mesh certificates) and a
    user key exists (`user_key`), so every call through the gateway is authenticated; else plaintext hops and
    anonymous calls (the keys interceptor still runs). `peer(name)` says how to reach a process.
    """

    def __init__(
        self,
        models: Sequence[str],
        services: Sequence[str],
        gateway: bool = True,
        secure: bool = False,
        extra: Sequence[Any] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        from aisemble.config.models import load_models
        from services.registry.store import write_models_file

        self.folder = Path(tempfile.mkdtemp(prefix="aisemble-bench-"))
        registry = load_models()
        write_models_file(self.folder / "models.yaml", [*(registry[name] for name in models), *extra])
        shutil.copy(REPO / "configs" / "selection.yaml", self.folder / "selection.yaml")
        self._names = ["registry", *services, *(["gateway"] if gateway else [])]
        self.addresses = {name: f"127.0.0.1:{free_port()}" for name in self._names}
        lines = [
            f"gateway: {{address: '{self.addresses.get('gateway', '127.0.0.1:1')}'}}",
            f"registry: {{address: '{self.addresses['registry']}'}}",
            "services:",
        ]
        lines += [f"  {name}: {{addresses: ['{self.addresses[name]}']}}" for name in services]
        lines.append(f"security: {{mtls: {'true' if secure else 'false'}}}")
        (self.folder / "mesh.yaml").write_text("\n".join(lines) + "\n")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.secure = secure
        self.env = dict(env or {})  # more environment for the processes (e.g. OTEL_* for tracing)
        self.user_key: str | None = None
        self._previous_state = os.environ.get("AISEMBLE_STATE_DIR")
        self._previous_store = os.environ.get("AISEMBLE_MODEL_STORE")

    def peer(self, name: str):  # type: ignore[no-untyped-def]
        """How the benchmark reaches one of the processes (mTLS to a service when secure)."""
        from dataclasses import replace

        from aisemble.config.mesh import load_mesh
        from entrypoints.launcher import peer_of

        mesh = load_mesh(self.folder / "mesh.yaml")
        security = replace(mesh.security, certs_dir=self.folder / "state" / "certs")  # this mesh's, whatever the env
        return peer_of(replace(mesh, security=security), name)

    def metadata(self) -> list[tuple[str, str]]:
        """Call metadata for the gateway: the user key when secure."""
        return [("authorization", f"Bearer {self.user_key}")] if self.user_key else []

    def __enter__(self) -> Mesh:
        from aisemble.config.mesh import load_mesh
        from aisemble.security.keys import KeyFile
        from aisemble.store.model_store import default_store_root
        from entrypoints.launcher import prepare_security, wait_healthy

        self._previous_store = os.environ.get("AISEMBLE_MODEL_STORE")
        os.environ["AISEMBLE_MODEL_STORE"] = str(default_store_root())  # the prepared store, not the new state's
        os.environ["AISEMBLE_STATE_DIR"] = str(self.folder / "state")  # certificates and keys of this mesh only
        prepare_security(load_mesh(self.folder / "mesh.yaml"))
        if self.secure:
            self.user_key = KeyFile().create("user", name="bench")[1]
        env = {**os.environ, "AISEMBLE_CONFIG_DIR": str(self.folder), "PYTHONUNBUFFERED": "1", **self.env}
        for name in self._names:
            process = subprocess.Popen(
                [sys.executable, "-m", "entrypoints.cli", "serve", name, "--metrics-port", "-1"],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.processes.append(process)
            if not wait_healthy(self.addresses[name], timeout_s=300, peer=self.peer(name)):
                self.__exit__()
                raise RuntimeError(f"{name} did not become healthy")
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
        for name, previous in (
            ("AISEMBLE_STATE_DIR", self._previous_state),
            ("AISEMBLE_MODEL_STORE", self._previous_store),
        ):
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
