"""Faults against the mesh as a user runs it (`aisemble up`): kill -9 of each service in turn under traffic of
every kind, and of the gateway during RegisterModel bursts. The launcher restarts what died; only calls that
needed the dead process fail, with UNAVAILABLE; nothing acknowledged is lost. Prints the report table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from aisemble.common.v1 import common_pb2
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from tests.e2e.traffic import DEADLINE_S, Traffic, errors_by_code, read_processes, report, rss_kb

#: The model services are killed one at a time (each has traffic of its own); the four the traffic does not call
#: are killed together (their restarts overlap, which is what the test's time allows).
IN_TURN = (("registry", "multimodal", "ensemble", "finetune"), ("nlp",), ("vision",), ("llm",))
SERVICES = tuple(service for group in IN_TURN for service in group)
#: A restarted process is reported serving once its models are loaded; the gateway's health watch of its
#: models may take a moment more.
SETTLE_S = 6.0


def _wait_restarted(folder, service: str, restarts: int, timeout_s: float = 240.0) -> float:
    """When the service was first seen restarted (`restarts` reached) and serving."""
    return _wait_all_restarted(folder, {service: restarts}, timeout_s)[service]


def _wait_all_restarted(folder, restarts: dict[str, int], timeout_s: float = 240.0) -> dict[str, float]:
    """When each service (name -> the restart count to reach) was first seen restarted and serving."""
    deadline, back = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        processes = read_processes(folder)
        for service, count in restarts.items():
            entry = processes.get(service, {})
            if service not in back and entry.get("restarts") == count and entry.get("state") == "serving":
                back[service] = time.monotonic()
        if len(back) == len(restarts):
            return back
        time.sleep(0.2)
    late = {service: read_processes(folder).get(service, {}) for service in restarts if service not in back}
    raise AssertionError(f"not restarted and serving within {timeout_s:.0f} s: {late}")


def test_kill_9_of_each_service_in_turn_under_traffic(mesh, capsys):
    channel, launcher, folder, _ = mesh
    traffic = Traffic(channel).start()
    time.sleep(3)  # traffic of every kind flowing
    rows, windows = [], {}
    for group in IN_TURN:
        before = {service: read_processes(folder)[service] for service in group}
        rss_before = {service: rss_kb(int(entry["pid"])) for service, entry in before.items()}
        killed = time.monotonic()
        for entry in before.values():
            os.kill(int(entry["pid"]), signal.SIGKILL)
        restarted = _wait_all_restarted(
            folder, {service: int(entry["restarts"]) + 1 for service, entry in before.items()}
        )
        for service in group:  # the rows in SERVICES' order
            back = restarted[service]
            windows[service] = (killed, back + SETTLE_S)
            after = read_processes(folder)[service]
            rows.append(
                [
                    f"kill -9 {service}" + (f" (with {len(group) - 1} others)" if len(group) > 1 else ""),
                    "",
                    "",
                    f"{back - killed:.1f}",
                    f"RSS {rss_before[service]} -> {rss_kb(int(after['pid']))} kB",
                ]
            )
        assert launcher.poll() is None, "the launcher stopped the mesh"
        time.sleep(2)
    time.sleep(SETTLE_S)
    calls = traffic.stop()

    def during(call) -> bool:
        """Whether the call overlapped its service's outage (it may have been in flight when the kill came)."""
        window = windows.get(call.service)
        return window is not None and call.started <= window[1] and call.started + call.seconds >= window[0]

    for call in calls:
        assert call.seconds <= DEADLINE_S + 2, f"{call} hung past its deadline"
        if call.code != "OK":
            assert call.code == "UNAVAILABLE" and during(call), f"{call} failed, but its service was up"
    for kind in traffic.kinds:
        last = [c for c in calls if c.kind == kind][-3:]
        assert last and all(c.code == "OK" for c in last), f"{kind} does not succeed after the restarts: {last}"
    for row, service in zip(rows, SERVICES, strict=True):
        mine = [c for c in calls if c.service == service and during(c)]
        row[1], row[2] = len(mine), errors_by_code(mine)
    others = [c for c in calls if not during(c)]
    rows.append(["every other call meanwhile", len(others), errors_by_code(others), "", "must be none"])
    assert errors_by_code(others) == "none"
    status = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "status"],
        env={**os.environ, "AISEMBLE_CONFIG_DIR": str(folder), "AISEMBLE_STATE_DIR": str(folder / "state")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and "restarts" in status.stdout
    for service in SERVICES:
        assert any(line.split()[:1] == [service] and " 1 " in line for line in status.stdout.splitlines()), (
            status.stdout
        )
    with capsys.disabled():
        print("\n" + report(rows))


@pytest.mark.parametrize("victim", ["gateway", "registry"])
def test_kill_9_during_register_bursts_loses_nothing_acknowledged(mesh, capsys, victim):
    """The registry service is the one writer; the gateway forwards to it. Killing either mid-burst loses no
    acknowledged registration, and the calls refused meanwhile say UNAVAILABLE."""
    channel, launcher, folder, _ = mesh
    admin = [("authorization", f"Bearer {(folder / 'state' / 'credentials' / 'admin.key').read_text().strip()}")]
    stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    acknowledged: list[str] = []
    failed: list[str] = []
    stop = threading.Event()

    def burst() -> None:
        index = 0
        while not stop.is_set():
            name = f"burst-{index}"
            index += 1
            model = rpb.Model(
                name=name,
                task=common_pb2.TASK_TEXT_GENERATION,
                provider="openai",
                model_id="x",
                endpoint="http://127.0.0.1:9/v1",
            )
            try:
                stub.RegisterModel(rpb.RegisterModelRequest(model=model), metadata=admin, timeout=5)
                acknowledged.append(name)
            except grpc.RpcError as exc:
                failed.append(f"{name}: {exc.code().name}")  # type: ignore[attr-defined]
                time.sleep(0.1)

    threads = [threading.Thread(target=burst, daemon=True) for _ in range(1)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    before = read_processes(folder)[victim]
    killed = time.monotonic()
    os.kill(int(before["pid"]), signal.SIGKILL)
    back = _wait_restarted(folder, victim, int(before["restarts"]) + 1)
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert launcher.poll() is None
    listed = {m.name for m in stub.ListModels(rpb.ListModelsRequest(page_size=1000), metadata=admin, timeout=10).models}
    lost = [name for name in acknowledged if name not in listed]
    assert acknowledged and not lost, f"acknowledged but lost: {lost}"
    assert all(code.endswith("UNAVAILABLE") for code in failed), failed
    for name in [n for n in listed if n.startswith("burst-")]:
        stub.DeregisterModel(rpb.DeregisterModelRequest(name=name), metadata=admin, timeout=10)
    with capsys.disabled():
        print(
            "\n"
            + report(
                [
                    [
                        f"kill -9 {victim} during RegisterModel",
                        len(acknowledged) + len(failed),
                        f"UNAVAILABLE {len(failed)}",
                        f"{back - killed:.1f}",
                        f"{len(acknowledged)} acknowledged, 0 lost",
                    ]
                ]
            )
        )
