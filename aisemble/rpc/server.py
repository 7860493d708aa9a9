"""The grpc.aio server every service and the gateway run: health, reflection, tracing, metrics, limits, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import context as otel_context

from aisemble.config.mesh import MeshConfig, listen_address
from aisemble.config.security import address_is_loopback
from aisemble.hosting.backend import RequestContext
from aisemble.hosting.follower import follow_registry_hooks
from aisemble.hosting.host import ModelHost
from aisemble.rpc.client import Peer, server_keepalive_options
from aisemble.rpc.client import registry_target as registry_target_of
from aisemble.rpc.interceptors import CallLimitInterceptor, ErrorsAndTelemetryInterceptor, RequestValidationInterceptor
from aisemble.rpc.metrics import RpcMetrics, serve_metrics
from aisemble.rpc.telemetry import configure_tracing, tracing_on
from aisemble.rpc.tls import registry_peer as registry_peer_of

__all__ = [
    "AisembleServer",
    "ServerConfig",
    "ServiceBinding",
    "model_service_server",
    "request_context",
    "start_health_listener",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to serve: its full gRPC service name and the generated `add_..._to_server` call."""

    full_name: str
    servicer: object
    add_to_server: Callable[[object, aio.Server], None]


@dataclass(frozen=True)
class ServerConfig:
    """How one server process listens and what it allows.

    credentials: TLS for the listener (None: plaintext; the mesh's services get mTLS from aisemble.rpc.tls).
    max_concurrent_rpcs / max_concurrent_streams: unary and streaming calls in flight (health is outside both).
    interceptors: more server interceptors (the gateway's auth), inside the error mapping and the limits.
    health_port: a second, plaintext listener serving grpc.health.v1 only (-1: none; 0: any free port), for probes
    that cannot speak the main port's mTLS (Kubernetes' gRPC probes); it binds the main address's host when that
    is loopback, else every interface.
    """

    name: str
    address: str = "127.0.0.1:0"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = -1  # -1: no metrics endpoint; 0: any free port
    health_port: int = -1
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent_rpcs: int | None = 256
    max_concurrent_streams: int | None = 256
    grace_s: float = 10.0
    credentials: grpc.ServerCredentials | None = None
    interceptors: Sequence[aio.ServerInterceptor] = field(default_factory=tuple)
    extra_options: Sequence[tuple[str, object]] = field(default_factory=tuple)


def _status(serving: bool) -> health_pb2.HealthCheckResponse.ServingStatus:
    return health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING


class AisembleServer:
    """A grpc.aio server with the shared plumbing, around the servicers and models of one process.

    start(): binds, serves health (overall NOT_SERVING until the preloaded models are loaded, one
    entry per service and per model), reflection, metrics; then loads the models.
    on_start hooks run once serving, before the overall health turns SERVING.
    stop(): health NOT_SERVING, drain in-flight RPCs for grace_s, stop, unload models, run on_stop hooks.
    """

    def __init__(
        self,
        config: ServerConfig,
        bindings: Sequence[ServiceBinding],
        model_host: ModelHost | None = None,
        on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
        on_start: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.config = config
        self.bindings = list(bindings)
        self.model_host = model_host
        self.metrics = RpcMetrics(config.name)
        self.health = health.aio.HealthServicer()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._on_stop = list(on_stop)
        self._on_start = list(on_start)
        self._server: aio.Server | None = None
        self._health_server: aio.Server | None = None
        self._companions: list[AisembleServer] = []
        self.health_port: int | None = None
        self._stopped = asyncio.Event()

    def _build(self) -> aio.Server:
        configure_tracing(self.config.name)
        interceptors: list[aio.ServerInterceptor] = [ErrorsAndTelemetryInterceptor(self.metrics)]
        self.limits = call_limits = CallLimitInterceptor(
            self.config.max_concurrent_rpcs, self.config.max_concurrent_streams
        )
        self.metrics.track_in_flight("unary", lambda: call_limits.unary_in_flight)
        self.metrics.track_in_flight("stream", lambda: call_limits.streams_in_flight)
        # Requests are checked last: after the limits and the gateway's auth, inside the error mapping.
        interceptors += [self.limits, *self.config.interceptors, RequestValidationInterceptor()]
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.so_reuseport", 0),
            *server_keepalive_options(),
            *self.config.extra_options,
        ]
        # gRPC's own cap is a backstop above our two limits, with room for health checks.
        limits = (self.config.max_concurrent_rpcs, self.config.max_concurrent_streams)
        backstop = None if None in limits else sum(limit or 0 for limit in limits) + 64
        return aio.server(interceptors=interceptors, options=options, maximum_concurrent_rpcs=backstop)

    def add_companion(self, other: AisembleServer) -> None:
        """Run `other` in this process with this server: started before it (so this one reaches it as it starts),
        stopped after it (e.g. a gateway and the registry it follows, in one test process)."""
        self._companions.append(other)

    async def start(self) -> int:
        """Bind and start serving, then load the preloaded models; returns the bound port."""
        for companion in self._companions:
            await companion.start()
        server = self._server = self._build()
        for binding in self.bindings:
            binding.add_to_server(binding.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [b.full_name for b in self.bindings]
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = listen_address(self.config.address)
        if self.config.credentials is not None:
            self.port = server.add_secure_port(address, self.config.credentials)
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"could not bind {address}")
        await server.start()
        if self.config.health_port >= 0:
            await self._start_health_listener(address)
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", not_serving)
        for name in names:
            await self.health.set(name, not_serving)
        self.metrics_port = serve_metrics(self.metrics, self.config.metrics_host, self.config.metrics_port)
        log.info("%s listening on port %d", self.config.name, self.port)
        if self.model_host is not None:
            loop = asyncio.get_running_loop()
            self.model_host.bind_health(
                lambda name, serving: loop.create_task(self.health.set(name, _status(serving)))  # type: ignore[arg-type,return-value]
            )
            await self.model_host.load_all()
        for hook in self._on_start:
            await hook()
        await self.set_serving(True)
        return self.port

    async def _start_health_listener(self, address: str) -> None:
        """The plaintext health-only listener (config.health_port), sharing this server's health statuses."""
        self._health_server, self.health_port = await start_health_listener(
            self.health, address, self.config.health_port
        )
        log.info("%s health checks (plaintext) on port %d", self.config.name, self.health_port)

    async def set_serving(self, serving: bool) -> None:
        """Set the overall and per-service health entries."""
        status = _status(serving)
        await self.health.set("", status)
        for binding in self.bindings:
            await self.health.set(binding.full_name, status)

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING everywhere, drain, stop, unload models, run hooks. Idempotent."""
        if self._server is None or self._stopped.is_set():
            return
        grace = self.config.grace_s if grace_s is None else grace_s
        log.info("%s stopping (grace %.1f s)", self.config.name, grace)
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
        if self.model_host is not None:
            await self.model_host.unload_all()
        for hook in self._on_stop:
            try:
                await hook()
            except Exception:
                log.exception("a shutdown hook failed")
        if self._health_server is not None:
            await self._health_server.stop(0)
        for companion in self._companions:
            await companion.stop(grace_s)
        self._stopped.set()
        log.info("%s stopped", self.config.name)

    async def serve_forever(self) -> None:
        """start(), then wait until SIGTERM/SIGINT and stop gracefully."""
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        started = asyncio.create_task(self.start())
        stopper = asyncio.create_task(stop_requested.wait())
        done, _ = await asyncio.wait({started, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if started in done:
            started.result()
            await stopper
        else:
            started.cancel()
        await self.stop()


async def start_health_listener(servicer: health.aio.HealthServicer, address: str, port: int) -> tuple[aio.Server, int]:
    """A plaintext listener serving `servicer` (grpc.health.v1) only, for probes that cannot speak the main port's
    TLS (Kubernetes' gRPC probes): on loopback when `address` is, else on every interface. Returns it, started,
    and its port."""
    host = "127.0.0.1" if address_is_loopback(address) else "[::]"
    server = aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind the health port {host}:{port}")
    await server.start()
    return server, bound


def request_context(context: aio.ServicerContext) -> RequestContext:
    """The backend-facing view of an RPC: its deadline (monotonic), a cancellation flag set when it ends, and its
    trace context (for spans recorded off the event loop)."""
    remaining = context.time_remaining()
    ctx = RequestContext(
        deadline=None if remaining is None else time.monotonic() + max(0.0, remaining),
        trace=otel_context.get_current() if tracing_on() else None,
    )
    context.add_done_callback(lambda _call: ctx.cancelled.set())
    return ctx


def model_service_server(
    config: ServerConfig,
    service: str,
    host: ModelHost,
    bindings: Sequence[ServiceBinding],
    mesh: MeshConfig | None,
    registry_target: str | None = None,
    on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
    registry_peer: Peer | None = None,
) -> AisembleServer:
    """The server of a model service: it hosts `host`'s models and follows the registry service (registry_target,
    default the mesh's registry; reached as registry_peer, default with the mesh key) so that a model registered
    at run time is loaded at once."""
    target = registry_target_of(mesh, registry_target)
    peer = registry_peer or registry_peer_of(mesh, service)
    on_start, stop_following = follow_registry_hooks(target, service, host, peer)
    return AisembleServer(config, bindings, model_host=host, on_start=on_start, on_stop=[*stop_following, *on_stop])
