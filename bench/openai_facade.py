"""OpenAI facade benchmark: the same chat streamed over gRPC to the gateway and as server-sent events through the
facade in front of it (gateway, LLM service and facade as separate processes, requests alternating).

Streamed tokens/s through the facade vs the gateway (64 tokens, exactly: min_tokens), and the first-token latency
each path sees (one-token chats, p50) and what the facade adds to it. The HTTP client is raw httpx reading the
SSE lines, so the figures are the facade's, not an SDK's JSON parsing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.rpc.client import blocking_channel
from bench.common import REPO, Mesh, free_port, median, percentile, print_table

MODEL = "smollm2-135m-onnx"
TOKENS = 64
STREAMS = 6
FIRST_TOKENS = 40
QUESTION = "Write a long story about a lighthouse keeper who finds a message in a bottle."
_RUN = "import sys; from aisemble.config.mesh import load_mesh; from facade.openai.server import run; " + (
    "sys.exit(run(sys.argv[1], load_mesh()))"
)


def _grpc_stream(stub: llm_service_pb2_grpc.LlmServiceStub, tokens: int) -> tuple[float, float, int]:
    """(seconds to the first text, seconds in all, tokens) of one StreamChat through the gateway."""
    request = pb.StreamChatRequest(
        model=MODEL,
        messages=[pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=QUESTION)],
        max_output_tokens=tokens,
        min_output_tokens=tokens,
        temperature=0.7,  # no seed: not cacheable, every call runs the model
    )
    started, first, count = time.perf_counter(), None, 0
    for reply in stub.StreamChat(request, timeout=300):
        if first is None and reply.text:
            first = time.perf_counter() - started
        count += reply.token_count
    return first or float("nan"), time.perf_counter() - started, count


def _http_stream(http: httpx.Client, tokens: int) -> tuple[float, float, int]:
    """The same through the facade: /v1/chat/completions, stream and include_usage."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": tokens,
        "min_tokens": tokens,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started, first, count = time.perf_counter(), None, 0
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
    return first or float("nan"), time.perf_counter() - started, count


class _Facade:
    """The facade as a process of its own (facade.openai.server.run), in front of the mesh's gateway."""

    def __init__(self, mesh: Mesh) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "AISEMBLE_CONFIG_DIR": str(mesh.folder), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _RUN, self.address], cwd=REPO, env=env, stdout=subprocess.DEVNULL
        )
        self.http = httpx.Client(base_url=f"http://{self.address}", timeout=300)
        for _ in range(600):
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.close()
        raise RuntimeError("the facade did not become healthy")

    def close(self) -> int | None:
        """SIGTERM, as a supervisor stops it; its exit code."""
        self.http.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None


def main() -> None:
    """Both paths on one mesh; their calls alternate, so both see the same machine."""
    samples: dict[str, list[float]] = {"grpc_first": [], "http_first": [], "grpc_rate": [], "http_rate": []}
    with Mesh([MODEL], ["llm"]) as mesh:
        channel = blocking_channel(mesh.addresses["gateway"], peer=mesh.peer("gateway"))
        stub = llm_service_pb2_grpc.LlmServiceStub(channel)
        facade = _Facade(mesh)
        paths = {"grpc": lambda n: _grpc_stream(stub, n), "http": lambda n: _http_stream(facade.http, n)}
        try:
            for _ in range(3):  # warm-up: both paths, connections open, the model's first runs done
                for stream in paths.values():
                    stream(8)
            for _ in range(FIRST_TOKENS):
                for path, stream in paths.items():
                    samples[f"{path}_first"].append(stream(1)[0])
            for _ in range(STREAMS):
                for path, stream in paths.items():
                    _first, seconds, tokens = stream(TOKENS)
                    if tokens != TOKENS:
                        raise RuntimeError(f"{path}: {tokens} tokens, not {TOKENS}")
                    samples[f"{path}_rate"].append(tokens / seconds)
        finally:
            code = facade.close()
            channel.close()
    print_table(
        ["path (SmolLM2 ONNX, chat)", "first token p50 ms", "first token p95 ms", f"tokens/s ({TOKENS} tokens)"],
        [
            [
                label,
                median(samples[f"{key}_first"]) * 1000,
                percentile(samples[f"{key}_first"], 95) * 1000,
                median(samples[f"{key}_rate"]),
            ]
            for label, key in (("gRPC StreamChat to the gateway", "grpc"), ("SSE through the OpenAI facade", "http"))
        ],
    )
    ratio = median(samples["http_rate"]) / median(samples["grpc_rate"])
    added = (median(samples["http_first"]) - median(samples["grpc_first"])) * 1000
    print(f"streamed tokens/s through the facade vs gRPC to the gateway: {ratio:.3f} (target >= 0.95)")
    print(f"added first-token latency, p50: {added:.2f} ms (target <= 2 ms)")
    print(f"facade exit code after SIGTERM: {code} (0: drained and stopped cleanly)")
