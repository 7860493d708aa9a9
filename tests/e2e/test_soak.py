"""Soak (`make soak`, minutes, not in `make test`): 64 concurrent streams plus Embed and Detect load against the
mesh for AISEMBLE_SOAK_SECONDS (600), the NLP service killed midway. No call fails beyond the killed service's
outage, every process's RSS stays within 10% of its level after warm-up, p99 latencies are reported."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.e2e.test_faults import _wait_restarted
from tests.e2e.traffic import Traffic, errors_by_code, read_processes, report, rss_kb

pytestmark = pytest.mark.skipif(os.environ.get("AISEMBLE_SOAK") != "1", reason="the soak runs with `make soak`")

SECONDS = float(os.environ.get("AISEMBLE_SOAK_SECONDS", "600"))
KILLED = "nlp"


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")


def test_soak_with_a_service_killed_midway(mesh, capsys):
    channel, launcher, folder, _ = mesh
    traffic = Traffic(channel, kinds=("stream", "embed", "detect"), threads_per_kind={"stream": 64}).start()
    warm = time.monotonic() + min(60.0, SECONDS / 10)
    while time.monotonic() < warm:
        time.sleep(1)
    rss_warm = {name: rss_kb(int(entry["pid"])) for name, entry in read_processes(folder).items()}
    time.sleep(max(0.0, SECONDS / 2 - min(60.0, SECONDS / 10)))
    before = read_processes(folder)[KILLED]
    killed = time.monotonic()
    os.kill(int(before["pid"]), signal.SIGKILL)
    back = _wait_restarted(folder, KILLED, int(before["restarts"]) + 1) + 6.0
    rss_warm[KILLED] = 0  # a new process: measured again once it has served a while
    time.sleep(min(60.0, SECONDS / 10))
    rss_warm[KILLED] = rss_kb(int(read_processes(folder)[KILLED]["pid"]))
    end = killed + SECONDS / 2
    while time.monotonic() < end:
        time.sleep(1)
    rss_end = {name: rss_kb(int(entry["pid"])) for name, entry in read_processes(folder).items()}
    calls = traffic.stop()
    assert launcher.poll() is None

    outage = [c for c in calls if c.service == KILLED and killed - 1 <= c.started <= back]
    others = [c for c in calls if c not in outage]
    rows = [
        [
            f"soak {SECONDS:.0f} s, {kind}",
            len(mine),
            errors_by_code(mine),
            "",
            f"p99 {_p99([c.seconds for c in mine]) * 1000:.0f} ms",
        ]
        for kind in traffic.kinds
        if (mine := [c for c in others if c.kind == kind])
    ]
    rows.append([f"kill -9 {KILLED} midway", len(outage), errors_by_code(outage), f"{back - 6.0 - killed:.1f}", ""])
    rows += [[f"RSS {name}", "", "", "", f"{rss_warm.get(name, 0)} -> {rss_end[name]} kB"] for name in sorted(rss_end)]
    with capsys.disabled():
        print("\n" + report(rows))
    assert errors_by_code(others) == "none"
    for name, now in rss_end.items():
        assert now <= rss_warm[name] * 1.10, f"{name}: RSS grew from {rss_warm[name]} to {now} kB"
