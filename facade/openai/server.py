"""Serves the OpenAI-compatible app with uvicorn in this process until SIGTERM or SIGINT, then drains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable

import prometheus_client
import uvicorn
from grpc import aio
from grpc_health.v1 import health, health_pb2
from starlette.types import ASGIApp

from aisemble.config.mesh import MeshConfig
from aisemble.config.schema import ConfigError
from aisemble.config.security import address_is_loopback
from aisemble.rpc.client import target_for
from aisemble.rpc.server import start_health_listener
from aisemble.rpc.telemetry import configure_tracing
from aisemble.rpc.tls import gateway_peer
from facade.openai.app import build_app

__all__ = ["DEFAULT_ADDRESS", "HttpServer", "app_for", "http_server", "run", "split_address"]

log = logging.getLogger(__name__)

#: Where `aisemble serve http` listens unless AISEMBLE_HTTP_ADDR says otherwise.
DEFAULT_ADDRESS = "127.0.0.1:8000"
#: The facade's name as a mesh member (its certificate, when the gateway's TLS asks for one).
IDENTITY = "http"


class HttpServer(uvicorn.Server):
    """uvicorn's server without signal handlers of its own (whoever runs it sets `should_exit`, as run() does
    on SIGTERM and SIGINT), and the port it bound."""

    #: Awaited once the server has bound its socket and serves (the health listener turns SERVING).
    on_started: Callable[[], Awaitable[None]] | None = None

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            await self.on_started()

    @property
    def port(self) -> int:
        """The bound port (once `started`)."""
        return int(self.servers[0].sockets[0].getsockname()[1])


def split_address(address: str) -> tuple[str, int]:
    """host:port ([::1]:port for IPv6) as (host, port); ConfigError when it is not one."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"the HTTP address {address!r} is not host:port (e.g. 127.0.0.1:8000)")
    return host, int(port)


def http_server(app: ASGIApp, address: str, grace_s: float = 10.0) -> HttpServer:
    """An HttpServer for `app` on `address` (port 0: any free one): no access log, uvicorn's own lines at
    warning only; on stop it lets requests in flight finish for up to grace_s, then cancels them (and with
    them their gateway calls)."""
    host, port = split_address(address)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        ws="none",
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level="warning",
        server_header=False,
        timeout_graceful_shutdown=max(1, round(grace_s)),
    )
    return HttpServer(config)


def app_for(mesh: MeshConfig) -> ASGIApp:
    """The app in front of the mesh's gateway (round_robin over its replicas; TLS when the gateway has it),
    with the mesh's message limit."""
    peer = gateway_peer(mesh.security, IDENTITY, None)  # no key of its own: every call carries its caller's
    return build_app(target_for(mesh.gateway.addresses), peer, max_message_bytes=mesh.max_message_bytes)


async def _health_listener(address: str, port: int) -> tuple[aio.Server, health.aio.HealthServicer]:
    """The plaintext grpc.health.v1 listener every process offers with --health-port (for Kubernetes' gRPC
    probes): NOT_SERVING until the HTTP server has started."""
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    server, _port = await start_health_listener(servicer, address, port)
    return server, servicer


def run(address: str, mesh: MeshConfig, health_port: int = -1, metrics_port: int = -1) -> int:
    """Serve the OpenAI-compatible API on `address` until SIGTERM or SIGINT; 0 after a clean stop, 1 when the
    address cannot be bound. health_port: also serve grpc.health.v1 there (-1: none); metrics_port: Prometheus
    (the process's figures; -1: none). Refuses (ConfigError) to listen beyond loopback in front of a loopback
    mesh: that gateway serves anonymous callers while no user key exists, and would serve the whole network."""
    if not address_is_loopback(address) and mesh.loopback_only():
        raise ConfigError(
            f"the HTTP API would listen on {address} in front of a mesh that listens on loopback only, whose "
            "gateway answers callers without a key while no user key exists: bind 127.0.0.1, or put the mesh "
            "beyond loopback in mesh.yaml (the gateway then requires keys)"
        )
    configure_tracing("http")
    server = http_server(app_for(mesh), address, mesh.grace_s)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, setattr, server, "should_exit", True)
        if health_port < 0:
            await server.serve()
            return
        listener, servicer = await _health_listener(address, health_port)

        async def now_serving() -> None:
            await servicer.set("", health_pb2.HealthCheckResponse.SERVING)

        server.on_started = now_serving
        try:
            await server.serve()
        finally:
            await servicer.enter_graceful_shutdown()
            await listener.stop(0)

    if metrics_port >= 0:
        prometheus_client.start_http_server(metrics_port, addr="127.0.0.1" if address_is_loopback(address) else "")
    log.info(
        "serving the OpenAI-compatible API on http://%s/v1 (gateway %s)", address, target_for(mesh.gateway.addresses)
    )
    try:
        asyncio.run(serve())
    except SystemExit:  # uvicorn exits when it cannot bind the address (it has logged why)
        return 1
    return 0 if server.started else 1
