"""Plumbing of the OpenAI facade tests: the facade in-process on a free port, in front of a real gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import grpc
from openai import AsyncOpenAI

from aisemble.config.security import SecurityConfig
from aisemble.rpc.server import ServerConfig
from aisemble.security.keys import KeyFile
from aisemble.security.quotas import UsageFile
from facade.openai.app import build_app
from facade.openai.server import http_server
from gateway.app import GatewayServer
from tests.integration.conftest import LLM_MODELS, build_gateway, mesh_for, wait_serving, write_registry

ONNX, TORCH, EMBEDDER = "smollm2-135m-onnx", "smollm2-135m", "minilm-l6"
#: The facade's body limit in these tests (the mesh default, 16 MiB, would make the 413 test slow).
BODY_LIMIT = 1 << 20


async def until(predicate, seconds: float = 30.0) -> None:
    """Until the async predicate holds (AssertionError after `seconds`)."""
    for _ in range(int(seconds / 0.1)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


@contextlib.asynccontextmanager
async def serving(app, address: str = "127.0.0.1:0") -> AsyncIterator[str]:
    """Serve an ASGI app with the facade's HttpServer as a task of this event loop; yields its base URL."""
    server = http_server(app, address, grace_s=1)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise AssertionError("the HTTP server stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class FacadeMesh:
    """The facade in front of a gateway over the session's LLM and NLP servers. The gateway has its own keys
    file with user keys (so it needs a key: no anonymous calls) and a 2 s quota window."""

    gateway: GatewayServer
    channel: grpc.aio.Channel
    url: str
    keys: dict[str, str]
    clients: list[AsyncOpenAI] = field(default_factory=list)

    def client(self, key: str | None = "user", url: str | None = None) -> AsyncOpenAI:
        """An SDK client (closed with the fixture) sending one of `keys`, a literal key, or (None) the placeholder
        the SDK requires; without retries."""
        secret = self.keys.get(key, key) if key else "sk-placeholder"
        self.clients.append(AsyncOpenAI(base_url=f"{url or self.url}/v1", api_key=secret, max_retries=0))
        return self.clients[-1]


@contextlib.asynccontextmanager
async def started_facade_mesh(llm, nlp, registry, store, folder) -> AsyncIterator[FacadeMesh]:
    """A FacadeMesh over the session's `llm` and `nlp` servers, its files in `folder`."""
    path = write_registry(folder / "models.yaml", registry, [*LLM_MODELS, EMBEDDER])
    layout = mesh_for(llm=[f"127.0.0.1:{llm[0].port}"], nlp=[f"127.0.0.1:{nlp[0].port}"])
    layout = replace(layout, security=SecurityConfig(mtls=False, quota_window_s=2.0))
    keys = KeyFile(folder / "keys.json")
    secrets = {
        "user": keys.create("user", name="all")[1],
        "onnx-only": keys.create("user", models=[ONNX])[1],
        "one-per-window": keys.create("user", rpm=1)[1],
    }
    gateway = build_gateway(
        ServerConfig(name="gateway"),
        layout,
        registry_path=path,
        store_root=store.root,
        keys=keys,
        usage=UsageFile(folder / "usage.json"),
    )
    port = await gateway.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        await wait_serving(gateway, [*LLM_MODELS, EMBEDDER])
        app = build_app(f"127.0.0.1:{port}", max_message_bytes=BODY_LIMIT)
        async with serving(app) as url:
            mesh = FacadeMesh(gateway, channel, url, secrets)
            try:
                yield mesh
            finally:
                for client in mesh.clients:
                    await client.close()
    finally:
        await channel.close()
        await gateway.stop(grace_s=0.5)
