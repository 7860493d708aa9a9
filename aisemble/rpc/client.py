"""The one gRPC client toolkit: channels (limits, keepalive, replicas), metadata, deadlines, failed calls as errors."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from aisemble.config.state import state_dir
from aisemble.errors import AisembleError, CancelledError, Code, DeadlineExceededError, UnavailableError, UpstreamError
from aisemble.rpc.calls import current_call
from aisemble.rpc.status import error_reason, rich_status
from aisemble.rpc.telemetry import trace_metadata

if TYPE_CHECKING:
    from aisemble.config.mesh import MeshConfig

__all__ = [
    "AUTHORIZATION_KEY",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "FORWARDED_METADATA",
    "ON_BEHALF_OF_KEY",
    "PLAINTEXT",
    "REQUEST_ID_KEY",
    "CallFailure",
    "Deadline",
    "LazyChannel",
    "Peer",
    "api_key",
    "blocking_channel",
    "call_failure",
    "channel_options",
    "error_from_call",
    "forwardable_metadata",
    "gateway_target",
    "open_channel",
    "registry_target",
    "server_keepalive_options",
    "target_for",
]

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Metadata key of the request id: taken from the caller when given, else made by the server; echoed in trailers.
REQUEST_ID_KEY = "x-request-id"

#: Metadata key of the caller's API key (`Bearer <key>`); the gateway checks it and never forwards it.
AUTHORIZATION_KEY = "authorization"
#: Metadata key by which the gateway tells the mesh whose call this is (a key id, or "-" for an anonymous
#: caller); the gateway honours it only from a mesh-role key (a composer calling back on the caller's behalf).
ON_BEHALF_OF_KEY = "x-aisemble-on-behalf-of"
#: Caller metadata forwarded to the next hop: request ids, trace context, the gateway's caller identity.
FORWARDED_METADATA = frozenset(
    {REQUEST_ID_KEY, "traceparent", "tracestate", "grpc-trace-bin", "baggage", ON_BEHALF_OF_KEY}
)

#: Clients ping an idle connection this often (so a dead peer is noticed), and servers accept pings this often.
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
#: The longest wait between two attempts to reach a peer that is down (a restart is seen within this).
MAX_RECONNECT_BACKOFF_MS = 5_000

_IP_PORT = re.compile(r"^\d{1,3}(\.\d{1,3}){3}:\d+$")


def target_for(addresses: Sequence[str]) -> str:
    """A channel target for one address or several replicas (`ipv4:a,b`); `dns:///name:port` passes through."""
    if not addresses:
        raise ValueError("no address")
    if len(addresses) > 1 and all(_IP_PORT.match(a) for a in addresses):
        return "ipv4:" + ",".join(addresses)
    return addresses[0]


def gateway_target(mesh: MeshConfig | None, explicit: str | None = None) -> str | None:
    """Where a process reaches the gateway (the registry, the public services): `explicit`, else the mesh's."""
    if explicit:
        return explicit
    return target_for(mesh.gateway.addresses) if mesh is not None else None


def registry_target(mesh: MeshConfig | None, explicit: str | None = None) -> str | None:
    """Where a process reaches the registry service (the control plane): `explicit`, else the mesh's."""
    if explicit:
        return explicit
    return target_for(mesh.registry.addresses) if mesh is not None and mesh.registry is not None else None


@dataclass(frozen=True)
class Peer:
    """How this process reaches one server and proves who it is: TLS credentials (None: plaintext), the name the
    server's certificate carries (checked instead of the address, so replicas and DNS names need no SAN each),
    and an API key sent as `authorization: Bearer` on every call (None: none)."""

    credentials: grpc.ChannelCredentials | None = None
    server_name: str | None = None
    api_key: str | None = None


PLAINTEXT = Peer()


def api_key(default_file: str = "admin.key") -> str | None:
    """This process's API key: $AISEMBLE_API_KEY, else the file $AISEMBLE_API_KEY_FILE, else
    <state>/credentials/<default_file> (admin.key for the CLI, mesh.key for the mesh's own processes)."""
    if os.environ.get("AISEMBLE_API_KEY"):
        return os.environ["AISEMBLE_API_KEY"].strip()
    path = Path(os.environ.get("AISEMBLE_API_KEY_FILE") or state_dir() / "credentials" / default_file)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def channel_options(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, balanced: bool = False, peer: Peer = PLAINTEXT
) -> list[tuple[str, object]]:
    """Client channel options: the servers' message limits, keepalive, the peer's certificate name, and (balanced)
    round_robin over replicas with client-side health checking, so a replica that is NOT_SERVING (draining,
    loading) leaves the rotation."""
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # Keep pinging an idle long-lived stream (health watches, WatchModels): gRPC stops after 2 pings
        # without data, and a peer that died after that would go unnoticed.
        ("grpc.http2.max_pings_without_data", 0),
        # A restarted peer is found again within seconds (gRPC's default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        # Each channel keeps its own connections: with gRPC's global pool, channels of equal options share
        # subchannels, so one that tried a peer before it listened would make the others' calls fail fast.
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if peer.credentials is not None and peer.server_name:
        options.append(("grpc.ssl_target_name_override", peer.server_name))
    if balanced:
        service_config = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
        options += [("grpc.service_config", json.dumps(service_config)), ("grpc.enable_retries", 1)]
    return options


#: A server closes each connection (GOAWAY, calls in flight finish) after this long, so that clients dialling
#: `dns:///name:port` resolve again and spread over replicas added since (gRPC re-resolves on a lost connection).
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000


def server_keepalive_options() -> list[tuple[str, object]]:
    """Server options that accept the clients' keepalive pings (gRPC's default would answer too_many_pings) and
    age connections out (MAX_CONNECTION_AGE_MS)."""
    return [
        ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
    ]


def _outgoing(metadata: Any, key: str | None) -> tuple[tuple[str, str | bytes], ...]:
    """A call's metadata as it leaves this process: this process's API key (unless the call brings one), the
    request id of the call being served (unless the call names one), and the current span's trace context."""
    pairs = tuple(metadata or ())
    if key and not any(k == AUTHORIZATION_KEY for k, _ in pairs):
        pairs = (*pairs, (AUTHORIZATION_KEY, f"Bearer {key}"))
    serving = current_call()
    if serving is not None and not any(k == REQUEST_ID_KEY for k, _ in pairs):
        pairs = (*pairs, (REQUEST_ID_KEY, serving.request_id))
    return trace_metadata(pairs) or pairs


class _OutgoingDetails:
    """Gives each call its outgoing metadata (_outgoing)."""

    def __init__(self, key: str | None) -> None:
        self._key = key

    def _details(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        return aio.ClientCallDetails(
            details.method,
            details.timeout,
            aio.Metadata(*_outgoing(details.metadata, self._key)),
            details.credentials,
            details.wait_for_ready,
        )


# grpc.aio files an interceptor under the first kind it is an instance of: one class per kind of call.
class _UnaryUnaryOutgoing(_OutgoingDetails, aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _UnaryStreamOutgoing(_OutgoingDetails, aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _StreamUnaryOutgoing(_OutgoingDetails, aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStreamOutgoing(_OutgoingDetails, aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def _outgoing_interceptors(key: str | None) -> list[aio.ClientInterceptor]:
    return [_UnaryUnaryOutgoing(key), _UnaryStreamOutgoing(key), _StreamUnaryOutgoing(key), _StreamStreamOutgoing(key)]


class _BlockingOutgoingInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """_OutgoingDetails for synchronous channels."""

    def __init__(self, key: str | None) -> None:
        self._key = key

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=_outgoing(details.metadata, self._key))

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


def open_channel(
    target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, balanced: bool = False, peer: Peer = PLAINTEXT
) -> aio.Channel:
    """A grpc.aio channel to a mesh server, with the mesh's options and the peer's TLS and API key; every call
    carries the request id and trace context of the call this process serves. Call it inside the event loop
    that uses it."""
    options = channel_options(max_message_bytes, balanced, peer)
    interceptors = _outgoing_interceptors(peer.api_key)
    if peer.credentials is not None:
        return aio.secure_channel(target, peer.credentials, options=options, interceptors=interceptors)
    return aio.insecure_channel(target, options=options, interceptors=interceptors)


def blocking_channel(
    target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, peer: Peer = PLAINTEXT
) -> grpc.Channel:
    """A synchronous channel with the mesh's options (and the API key, request id and trace context of
    open_channel), for command-line clients and the launcher."""
    options = channel_options(max_message_bytes, peer=peer)
    if peer.credentials is not None:
        channel = grpc.secure_channel(target, peer.credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, _BlockingOutgoingInterceptor(peer.api_key))


class LazyChannel:
    """A channel opened on first use: a grpc.aio channel belongs to the event loop that makes it, and servers are
    built before their loop runs."""

    def __init__(
        self,
        target: str,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        balanced: bool = False,
        peer: Peer = PLAINTEXT,
    ):
        self.target = target
        self._max_message_bytes = max_message_bytes
        self._balanced = balanced
        self._peer = peer
        self._channel: aio.Channel | None = None

    @property
    def channel(self) -> aio.Channel:
        """The channel (opened now if it is not yet)."""
        if self._channel is None:
            self._channel = open_channel(self.target, self._max_message_bytes, self._balanced, self._peer)
        return self._channel

    async def close(self) -> None:
        """Close the channel if it was opened."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


def forwardable_metadata(
    context: aio.ServicerContext, extra: frozenset[str] | set[str] = frozenset()
) -> list[tuple[str, str | bytes]]:
    """The caller's metadata that passes to the next hop: only FORWARDED_METADATA (and `extra`) - never the
    caller's credentials, cookies or anything else it sent."""
    return [
        (key, value) for key, value in context.invocation_metadata() or () if key in FORWARDED_METADATA or key in extra
    ]


@dataclass(frozen=True)
class Deadline:
    """A point in time (time.monotonic()) by which a call must be done; None: no deadline."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """The deadline `seconds` from now (None: none)."""
        return cls(None if seconds is None else time.monotonic() + max(0.0, seconds))

    @classmethod
    def of(cls, context: aio.ServicerContext, default_s: float | None = None) -> Deadline:
        """The caller's deadline, or default_s from now when the caller set none."""
        remaining = context.time_remaining()
        return cls.after(default_s if remaining is None else remaining)

    def timeout(self, cap_s: float | None = None) -> float | None:
        """Seconds left for the next call (at most cap_s, at least 1 ms); None when there is no limit."""
        limits = [t for t in (None if self.at is None else self.at - time.monotonic(), cap_s) if t is not None]
        return max(0.001, min(limits)) if limits else None


def error_from_call(exc: grpc.aio.AioRpcError, service: str, addresses: Iterable[str] = ()) -> AisembleError:
    """Our error for a failed call: the callee's own rich status when it sent one, else a clear one of ours."""
    code = exc.code()
    status = rich_status(exc)
    if status:
        return UpstreamError(code.value[0], exc.details() or code.name, status)
    where = ", ".join(addresses)
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnavailableError(
            f"the {service} service{f' ({where})' if where else ''} is unavailable: {exc.details()}",
            reason="UPSTREAM_UNAVAILABLE",
            metadata={"service": service},
            retry_after_s=1.0,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError(
            f"the {service} service did not answer before the deadline", metadata={"service": service}
        )
    if code == grpc.StatusCode.CANCELLED:
        return CancelledError(f"the call to the {service} service was cancelled", metadata={"service": service})
    return UpstreamError(code.value[0], exc.details() or code.name)


@dataclass(frozen=True)
class CallFailure:
    """How one call of a composition failed: a google.rpc code, the ErrorInfo reason and a message."""

    code: int
    reason: str
    message: str


def call_failure(exc: BaseException, timeout_message: str = "timed out") -> CallFailure | None:
    """The failure of one part of a composition (a failed call, a timeout, a cancellation); None: a bug."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return CallFailure(exc.code().value[0], error_reason(exc), exc.details() or exc.code().name)
    if isinstance(exc, asyncio.CancelledError):
        return CallFailure(Code.CANCELLED, "CANCELLED", "the call was cancelled")
    if isinstance(exc, TimeoutError):
        return CallFailure(Code.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", timeout_message)
    return None
