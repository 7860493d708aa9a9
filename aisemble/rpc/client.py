"""The one gRPC client toolkit: channels (limits, keepalive, replicas), metadata, deadlines, failed calls as errors."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc import aio

from aisemble.errors import AisembleError, CancelledError, Code, DeadlineExceededError, UnavailableError, UpstreamError
from aisemble.rpc.status import error_reason, rich_status

if TYPE_CHECKING:
    from aisemble.config.mesh import MeshConfig

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "REQUEST_ID_KEY",
    "CallFailure",
    "Deadline",
    "LazyChannel",
    "blocking_channel",
    "call_failure",
    "channel_options",
    "error_from_call",
    "forwardable_metadata",
    "gateway_target",
    "open_channel",
    "server_keepalive_options",
    "target_for",
]

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Metadata key of the request id: taken from the caller when given, else made by the server; echoed in trailers.
REQUEST_ID_KEY = "x-request-id"

#: Clients ping an idle connection this often (so a dead peer is noticed), and servers accept pings this often.
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
_MIN_PING_INTERVAL_MS = KEEPALIVE_TIME_MS // 2

_IP_PORT = re.compile(r"^\d{1,3}(\.\d{1,3}){3}:\d+$")
#: Metadata that belongs to one hop and is not forwarded.
_HOP_BY_HOP = {"user-agent", "content-type", "te", "grpc-accept-encoding", "grpc-encoding", "grpc-timeout"}


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


def channel_options(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, balanced: bool = False
) -> list[tuple[str, object]]:
    """Client channel options: the servers' message limits, keepalive, and (balanced) round_robin over replicas
    with client-side health checking, so a replica that is NOT_SERVING (draining, loading) leaves the rotation."""
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # Each channel keeps its own connections: with gRPC's global pool, channels of equal options share
        # subchannels, so one that tried a peer before it listened would make the others' calls fail fast.
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if balanced:
        service_config = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
        options += [("grpc.service_config", json.dumps(service_config)), ("grpc.enable_retries", 1)]
    return options


def server_keepalive_options() -> list[tuple[str, object]]:
    """Server options that accept the clients' keepalive pings (gRPC's default would answer too_many_pings)."""
    return [
        ("grpc.http2.min_ping_interval_without_data_ms", _MIN_PING_INTERVAL_MS),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def open_channel(
    target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, balanced: bool = False
) -> aio.Channel:
    """A grpc.aio channel to a mesh server, with the mesh's options. Call it inside the event loop that uses it."""
    return aio.insecure_channel(target, options=channel_options(max_message_bytes, balanced))


def blocking_channel(target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.Channel:
    """A synchronous channel with the mesh's options, for command-line clients and the launcher."""
    return grpc.insecure_channel(target, options=channel_options(max_message_bytes))


class LazyChannel:
    """A channel opened on first use: a grpc.aio channel belongs to the event loop that makes it, and servers are
    built before their loop runs."""

    def __init__(self, target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, balanced: bool = False):
        self.target = target
        self._max_message_bytes = max_message_bytes
        self._balanced = balanced
        self._channel: aio.Channel | None = None

    @property
    def channel(self) -> aio.Channel:
        """The channel (opened now if it is not yet)."""
        if self._channel is None:
            self._channel = open_channel(self.target, self._max_message_bytes, self._balanced)
        return self._channel

    async def close(self) -> None:
        """Close the channel if it was opened."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


def forwardable_metadata(context: aio.ServicerContext) -> list[tuple[str, str | bytes]]:
    """The caller's metadata that passes through to the next hop (request ids, auth, tracing)."""
    return [
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if key not in _HOP_BY_HOP and not key.startswith(":") and not key.startswith("grpc-")
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
