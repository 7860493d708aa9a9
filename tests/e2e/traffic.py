"""Traffic of every kind against a running mesh, recorded call by call, and the report table of a fault run."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from aisemble.common.v1 import common_pb2
from aisemble.llm.v1 import llm_service_pb2 as lpb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.nlp.v1 import nlp_service_pb2 as npb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.vision.v1 import vision_service_pb2 as vpb
from aisemble.vision.v1 import vision_service_pb2_grpc
from tests.assets.pictures import bus_jpg

__all__ = ["Call", "Traffic", "read_processes", "rss_kb"]

DEADLINE_S = 20.0


@dataclass(frozen=True)
class Call:
    """One finished call: which service it needed, when it ran, how it ended."""

    kind: str
    service: str
    started: float
    seconds: float
    code: str


def read_processes(folder: Path) -> dict[str, dict[str, object]]:
    """service -> its record in the launcher's processes.json (the mesh's state folder); a service's later
    replicas are `<service>#1`, `<service>#2`, ... in mesh.yaml's order."""
    path = folder / "state" / "mesh" / "processes.json"
    try:
        entries = json.loads(path.read_text())["processes"]
    except (FileNotFoundError, ValueError, KeyError):
        return {}
    found: dict[str, dict[str, object]] = {}
    for entry in entries:
        name, index = str(entry["service"]), 0
        while (name if index == 0 else f"{name}#{index}") in found:
            index += 1
        found[name if index == 0 else f"{name}#{index}"] = entry
    return found


def rss_kb(pid: int) -> int:
    """Resident memory of a process (kB), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


@dataclass
class Traffic:
    """Threads calling the gateway in a loop, one per kind of call, until stopped."""

    channel: grpc.Channel
    kinds: tuple[str, ...] = ("complete", "stream", "embed", "detect", "list")
    #: Threads per kind (default one).
    threads_per_kind: dict[str, int] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _one(self, kind: str) -> str:
        llm = llm_service_pb2_grpc.LlmServiceStub(self.channel)
        if kind == "complete":
            llm.Complete(
                lpb.CompleteRequest(model="smollm2-135m-onnx", prompt="Hi", max_output_tokens=2), timeout=DEADLINE_S
            )
        elif kind == "stream":
            request = lpb.StreamCompleteRequest(model="smollm2-135m-onnx", prompt="Once", max_output_tokens=8)
            for _ in llm.StreamComplete(request, timeout=DEADLINE_S):
                pass
        elif kind == "embed":
            stub = nlp_service_pb2_grpc.NlpServiceStub(self.channel)
            stub.Embed(npb.EmbedRequest(model="minilm-l6", texts=[f"text {time.monotonic()}"]), timeout=DEADLINE_S)
        elif kind == "detect":
            stub = vision_service_pb2_grpc.VisionServiceStub(self.channel)
            image = common_pb2.Image(data=bus_jpg())
            stub.Detect(
                vpb.DetectRequest(model="yolov8-fall", image=image, score_threshold=0.3 + (time.monotonic() % 0.1)),
                timeout=DEADLINE_S,
            )
        elif kind == "list":
            registry_service_pb2_grpc.ModelRegistryServiceStub(self.channel).ListModels(
                rpb.ListModelsRequest(), timeout=DEADLINE_S
            )
        return "OK"

    def _loop(self, kind: str) -> None:
        service = {"complete": "llm", "stream": "llm", "embed": "nlp", "detect": "vision", "list": "gateway"}[kind]
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                code = self._one(kind)
            except grpc.RpcError as exc:
                code = exc.code().name  # type: ignore[attr-defined]
            with self._lock:
                self.calls.append(Call(kind, service, started, time.monotonic() - started, code))
            time.sleep(0.05)

    def start(self) -> Traffic:
        for kind in self.kinds:
            for index in range(self.threads_per_kind.get(kind, 1)):
                thread = threading.Thread(target=self._loop, args=(kind,), daemon=True, name=f"traffic-{kind}-{index}")
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> list[Call]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=DEADLINE_S + 5)
        return list(self.calls)


def report(rows: list[list[object]]) -> str:
    """The fault suite's table (Markdown, for the README)."""
    headers = ["scenario", "requests", "errors by code", "recovery s", "note"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def errors_by_code(calls: list[Call]) -> str:
    counts = Counter(c.code for c in calls if c.code != "OK")
    return ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "none"
