"""KServe v2 benchmark: Embed through the gateway's KServe v2 API (tritonclient) vs NlpService.Embed through the same
gateway, at 1, 8 and 32 concurrent clients; calls/s of each and their ratio, measured in alternating rounds."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import tritonclient.grpc.aio as triton

from aisemble.nlp.v1 import nlp_service_pb2 as pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from bench.common import Mesh, median, print_table

MODEL = "minilm-l6"
LEVELS = (1, 8, 32)
SECONDS = 3.0  # per measurement
ROUNDS = 3  # per level and path, alternating the two paths
TEXT = "The stock market fell sharply after the central bank raised interest rates"

Call = Callable[[str], Awaitable[object]]


async def _rate(call: Call, clients: int, texts: itertools.count[int]) -> float:
    """Calls/s of `clients` concurrent callers for SECONDS; every text is new, so the gateway's cache never answers."""
    deadline = time.perf_counter() + SECONDS
    done = 0

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call(f"{TEXT} #{next(texts)}")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - started)


async def _measure(address: str) -> dict[tuple[str, int], list[float]]:
    kserve_client = triton.InferenceServerClient(address)
    channel = grpc.aio.insecure_channel(address)
    embed = nlp_service_pb2_grpc.NlpServiceStub(channel).Embed

    async def via_kserve(text: str) -> object:
        tensor = triton.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
        result = await kserve_client.infer(MODEL, [tensor], client_timeout=30)
        return result.as_numpy("embedding")

    async def via_typed(text: str) -> object:
        reply = await embed(pb.EmbedRequest(model=MODEL, texts=[text]), timeout=30)
        return np.asarray(reply.embeddings[0].values, dtype=np.float32)

    paths = {"KServe v2 (tritonclient)": via_kserve, "NlpService.Embed": via_typed}
    texts = itertools.count()
    samples: dict[tuple[str, int], list[float]] = {}
    try:
        for call in paths.values():  # warm-up: channels, the model's first batches
            await _rate(call, 8, texts)
        for clients in LEVELS:
            for _ in range(ROUNDS):
                for label, call in paths.items():
                    samples.setdefault((label, clients), []).append(await _rate(call, clients, texts))
    finally:
        await kserve_client.close()
        await channel.close()
    return samples


def main() -> None:
    """One mesh (the NLP service and the gateway, plaintext, no key); both paths call it in the same run."""
    with Mesh([MODEL], ["nlp"]) as mesh:
        samples = asyncio.run(_measure(mesh.addresses["gateway"]))
    rows = []
    for clients in LEVELS:
        kserve = median(samples[("KServe v2 (tritonclient)", clients)])
        typed = median(samples[("NlpService.Embed", clients)])
        rows.append([clients, kserve, typed, kserve / typed])
    print_table(
        ["clients", "KServe v2 ModelInfer calls/s", "NlpService.Embed calls/s", "KServe / Embed"],
        rows,
    )
    print(f"{MODEL}, one text per call, through the gateway; median of {ROUNDS} rounds of {SECONDS:.0f} s per cell")
