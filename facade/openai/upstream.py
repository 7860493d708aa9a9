"""The gateway as the facade calls it: one channel over its replicas, the stubs, each call's metadata and deadline."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2_grpc
from starlette.datastructures import Headers

from aisemble.finetune.v1 import finetune_service_pb2_grpc
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.client import (
    AUTHORIZATION_KEY,
    DEFAULT_MAX_MESSAGE_BYTES,
    PLAINTEXT,
    REQUEST_ID_KEY,
    Peer,
    open_channel,
)
from aisemble.security.keys import key_id_of
from aisemble.vision.v1 import vision_service_pb2_grpc
from facade.openai.errors import OpenAIError

__all__ = ["DEFAULT_TIMEOUT_S", "CallOptions", "GatewayClient", "call_options", "list_all_models", "replica_targets"]

#: The deadline of every call to the gateway (OpenAI's `timeout` is the client's own and never sent).
DEFAULT_TIMEOUT_S = 600.0
#: Caller headers passed on as metadata as they are: the request id and the trace context.
_PASSED_HEADERS = (REQUEST_ID_KEY, "traceparent", "tracestate", "baggage")


@dataclass(frozen=True)
class CallOptions:
    """What every call made for one HTTP request carries: its metadata, deadline and request id."""

    metadata: tuple[tuple[str, str], ...]
    timeout: float
    request_id: str


def _metadata_value(name: str, value: str) -> str:
    if not (value.isascii() and value.isprintable()) or len(value) > 8192:
        raise OpenAIError.invalid(None, f"the {name} header must be printable ASCII, at most 8192 characters")
    return value


def call_options(headers: Headers, timeout_s: float) -> CallOptions:
    """The call options of a request. A bearer token shaped like an Ai-semble key is passed on for the gateway
    to check; any other (the placeholder OpenAI's SDKs require) is not, and the call is anonymous, which the
    gateway allows only while the mesh is open. A request without x-request-id gets one."""
    request_id = _metadata_value(REQUEST_ID_KEY, headers.get(REQUEST_ID_KEY) or uuid.uuid4().hex)
    metadata = [(REQUEST_ID_KEY, request_id)]
    metadata += [(name, _metadata_value(name, headers[name])) for name in _PASSED_HEADERS[1:] if name in headers]
    scheme, _, token = headers.get(AUTHORIZATION_KEY, "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and key_id_of(token):
        metadata.append((AUTHORIZATION_KEY, f"Bearer {_metadata_value(AUTHORIZATION_KEY, token)}"))
    return CallOptions(tuple(metadata), timeout_s, request_id)


async def list_all_models(registry: Any, options: CallOptions) -> list[rpb.Model]:
    """Every model a ModelRegistryService stub lists to the caller, all pages."""
    found: list[rpb.Model] = []
    token = ""
    while True:
        reply = await registry.ListModels(
            rpb.ListModelsRequest(page_size=1000, page_token=token), metadata=options.metadata, timeout=options.timeout
        )
        found.extend(reply.models)
        token = reply.next_page_token
        if not token:
            return found


def replica_targets(target: str) -> list[str]:
    """One target per gateway replica: `ipv4:a,b` is [a, b]; any other target is one (a `dns:///` name's
    addresses are balanced by gRPC and not listed here)."""
    if target.startswith("ipv4:"):
        return [address for address in target.removeprefix("ipv4:").split(",") if address]
    return [target]


class GatewayClient:
    """The stubs of the gateway's LLM, NLP, vision, fine-tuning, registry and health services, on one channel
    balancing over its replicas (round_robin, as the gateway's own upstreams), and a registry stub per replica
    for what each replica keeps of its own (its figures, its routing decisions). open() inside the serving
    event loop."""

    def __init__(
        self,
        target: str,
        peer: Peer = PLAINTEXT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.target = target
        self.peer = peer
        self.max_message_bytes = max_message_bytes
        self.timeout_s = timeout_s
        self._channel: aio.Channel | None = None
        self._replica_channels: list[aio.Channel] = []

    def open(self) -> None:
        """Open the channel and the stubs."""
        self._channel = open_channel(self.target, self.max_message_bytes, balanced=True, peer=self.peer)
        self.llm = llm_service_pb2_grpc.LlmServiceStub(self._channel)
        self.nlp = nlp_service_pb2_grpc.NlpServiceStub(self._channel)
        self.vision = vision_service_pb2_grpc.VisionServiceStub(self._channel)
        self.finetune = finetune_service_pb2_grpc.FineTuneServiceStub(self._channel)
        self.registry = registry_service_pb2_grpc.ModelRegistryServiceStub(self._channel)
        self.health = health_pb2_grpc.HealthStub(self._channel)
        replicas = replica_targets(self.target)
        if len(replicas) > 1:
            self._replica_channels = [
                open_channel(replica, self.max_message_bytes, peer=self.peer) for replica in replicas
            ]
        channels = self._replica_channels or [self._channel]
        self.replica_registries = [registry_service_pb2_grpc.ModelRegistryServiceStub(c) for c in channels]

    @property
    def replicas(self) -> int:
        """How many gateway replicas the target lists."""
        return len(replica_targets(self.target))

    async def close(self) -> None:
        """Close the channels (calls in flight are cancelled)."""
        channels, self._replica_channels = [self._channel, *self._replica_channels], []
        self._channel = None
        for channel in channels:
            if channel is not None:
                await channel.close()

    def options(self, headers: Headers) -> CallOptions:
        """The call options of one HTTP request."""
        return call_options(headers, self.timeout_s)
