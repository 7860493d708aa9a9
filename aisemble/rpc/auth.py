"""Who may call what: API keys, roles per RPC, models per key, quotas; one server interceptor (gateway and registry)."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from grpc import aio
from prometheus_client import CollectorRegistry, Counter

from aisemble.errors import PermissionDeniedError, UnauthenticatedError
from aisemble.rpc.client import AUTHORIZATION_KEY, ON_BEHALF_OF_KEY
from aisemble.rpc.interceptors import WrappingInterceptor, stream_of
from aisemble.security.keys import ApiKey, KeyRing
from aisemble.security.quotas import QuotaBook

__all__ = ["ANONYMOUS", "AuthInterceptor", "Authenticator", "Principal", "current_principal", "required_role"]

log = logging.getLogger(__name__)

_REGISTRY = "/aisemble.registry.v1.ModelRegistryService/"
_FINETUNE = "/aisemble.finetune.v1.FineTuneService/"
#: RPCs that change the mesh, and the roles that may call them (every other public RPC: any key, or anonymous
#: while the mesh is open, see Authenticator).
_WRITES: dict[str, frozenset[str]] = {
    _REGISTRY + "RegisterModel": frozenset({"admin", "mesh"}),  # mesh: the fine-tuning service publishes
    _REGISTRY + "DeregisterModel": frozenset({"admin"}),
    _FINETUNE + "CreateFineTuneJob": frozenset({"admin"}),
    _FINETUNE + "CancelFineTuneJob": frozenset({"admin"}),
    _FINETUNE + "UploadTrainingFile": frozenset({"admin"}),
}
#: Open to anyone who reaches the port: health (probes), reflection (it shows the contracts only) and the KServe v2
#: liveness and readiness probes (they say whether the server serves, nothing about a model or a key).
_OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
)


def required_role(method: str) -> frozenset[str] | None:
    """The roles that may call a method path; None: any caller, even without a key (health, reflection)."""
    if method.startswith(_OPEN_PREFIXES):
        return None
    return _WRITES.get(method, frozenset({"admin", "user", "mesh"}))


@dataclass(frozen=True)
class Principal:
    """Who a call is for: a key (None: an anonymous caller of an open mesh), and whether the mesh makes the call
    on that caller's behalf (a composer calling back through the gateway)."""

    key: ApiKey | None
    on_behalf: bool = False

    @property
    def key_id(self) -> str:
        """The key id, '-' for anonymous."""
        return self.key.key_id if self.key else "-"

    @property
    def sees_configuration(self) -> bool:
        """Whether registry reads show this caller endpoints, params and store paths (admins and the mesh)."""
        return self.key is not None and self.key.role in ("admin", "mesh")

    def allows_model(self, model: str) -> bool:
        """Whether this caller may use `model`."""
        return self.key is None or self.key.allows_model(model)

    def check_model(self, model: str) -> None:
        """PERMISSION_DENIED when the key is limited to other models."""
        if not self.allows_model(model):
            assert self.key is not None
            raise PermissionDeniedError(
                f"key {self.key.key_id} may not call model '{model}' (it is limited to {', '.join(self.key.models)})",
                reason="MODEL_NOT_ALLOWED",
                metadata={"key_id": self.key.key_id, "model": model},
            )


ANONYMOUS = Principal(None)
#: The principal of the call being served (set by AuthInterceptor for the call's task).
current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("aisemble_principal", default=ANONYMOUS)


def _bearer(metadata: Any) -> tuple[str | None, str | None]:
    """(the presented key, the on-behalf-of id) from call metadata."""
    token = on_behalf = None
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY and isinstance(value, str):
            scheme, _, rest = value.partition(" ")
            token = rest.strip() if scheme.lower() == "bearer" else value.strip()
        elif key == ON_BEHALF_OF_KEY and isinstance(value, str):
            on_behalf = value
    return token, on_behalf


class Authenticator:
    """Decides each call: who it is (a key from the keys file), whether its role and models allow it, and its
    quotas. Inference and reads are open without a key only while the mesh is open: no user key exists and every
    listener is on loopback. Writes always need an admin key. Keys are never logged (only their ids)."""

    def __init__(self, keys: KeyRing, quotas: QuotaBook, loopback_only: bool = True) -> None:
        self.keys = keys
        self.quotas = quotas
        self.loopback_only = loopback_only
        self.metrics: dict[str, Counter] = {}

    def open_to_anonymous(self) -> bool:
        """Whether inference and reads need no key right now."""
        return self.loopback_only and not self.keys.has_user_keys()

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        """Per-key usage counters on the gateway's Prometheus registry."""
        labels = ["key_id", "role"]
        self.metrics = {
            "requests": Counter("aisemble_key_requests", "Calls admitted per API key.", labels, registry=registry),
            "rejected": Counter(
                "aisemble_key_rejected", "Calls refused per API key and reason.", [*labels, "reason"], registry=registry
            ),
            "tokens": Counter("aisemble_key_output_tokens", "Output tokens per API key.", labels, registry=registry),
            "cost": Counter("aisemble_key_cost", "Cost per API key (the models' units).", labels, registry=registry),
        }

    def _count(self, name: str, key: ApiKey | None, amount: float = 1.0, reason: str | None = None) -> None:
        counter = self.metrics.get(name)
        if counter is not None:
            labels = [key.key_id if key else "-", key.role if key else "anonymous", *([reason] if reason else [])]
            counter.labels(*labels).inc(amount)

    def _identify(self, method: str, metadata: Any) -> Principal:
        roles = required_role(method)
        token, on_behalf = _bearer(metadata)
        if token is None:
            if "user" in (roles or ()) and self.open_to_anonymous():
                return ANONYMOUS
            why = "this call needs an admin key" if "user" not in (roles or ()) else "this mesh needs an API key"
            raise UnauthenticatedError(
                f"{why}: send `authorization: Bearer <key>` (make one with `aisemble keys create`; the local admin "
                "key is in .aisemble/credentials/admin.key)",
                reason="API_KEY_MISSING",
            )
        key = self.keys.find(token)
        if key is None or not key.active:
            reason = "API_KEY_REVOKED" if key is not None else "API_KEY_INVALID"
            self._count("rejected", key, reason=reason)
            raise UnauthenticatedError(
                "the API key is revoked" if key is not None else "the API key is not valid", reason=reason
            )
        if key.role == "mesh" and on_behalf and on_behalf != "-":
            # The mesh acts for a caller (a composer, a gateway forwarding a registry write): the caller's role counts.
            caller = self.keys.get(on_behalf)
            if caller is None or not caller.active:
                raise UnauthenticatedError("the caller's key is no longer valid", reason="API_KEY_REVOKED")
            if roles is not None and caller.role not in roles:
                raise PermissionDeniedError(
                    f"key {caller.key_id} (role {caller.role}) may not call {method.rsplit('/', 1)[-1]}",
                    reason="ROLE_NOT_ALLOWED",
                    metadata={"key_id": caller.key_id, "role": caller.role},
                )
            return Principal(caller, on_behalf=True)
        if roles is not None and key.role not in roles:
            self._count("rejected", key, reason="ROLE_NOT_ALLOWED")
            raise PermissionDeniedError(
                f"key {key.key_id} (role {key.role}) may not call {method.rsplit('/', 1)[-1]}: it needs role "
                f"{' or '.join(sorted(roles))}",
                reason="ROLE_NOT_ALLOWED",
                metadata={"key_id": key.key_id, "role": key.role},
            )
        if key.role == "mesh" and on_behalf == "-":
            return Principal(None, on_behalf=True)  # for an anonymous caller of an open mesh
        return Principal(key)

    def admit(self, method: str, metadata: Any) -> Principal | None:
        """The principal of a call, admitted to its key's quotas (release() must follow); None: an open method."""
        if required_role(method) is None:
            return None
        principal = self._identify(method, metadata)
        if principal.key is not None:
            try:
                self.quotas.admit(principal.key, count_request=not principal.on_behalf)
            except Exception as exc:
                self._count("rejected", principal.key, reason=getattr(exc, "reason", "QUOTA"))
                raise
            if not principal.on_behalf:
                self._count("requests", principal.key)
        return principal

    def release(self, principal: Principal) -> None:
        """An admitted call ended."""
        if principal.key is not None:
            self.quotas.release(principal.key)

    def record_usage(self, output_tokens: int, cost: float) -> None:
        """Output tokens and cost of the current call (from the responses' usage), for its key's quota and figures."""
        key = current_principal.get().key
        if key is not None and (output_tokens > 0 or cost > 0):
            self.quotas.add_tokens(key, output_tokens, cost)
            self._count("tokens", key, output_tokens)
            self._count("cost", key, cost)


class AuthInterceptor(WrappingInterceptor):
    """Runs Authenticator on every call and serves it as its principal (current_principal)."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def wrap_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        if required_role(method) is None:
            return behavior  # type: ignore[no-any-return]
        authenticator = self.authenticator

        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            principal = authenticator.admit(method, context.invocation_metadata())
            assert principal is not None
            token = current_principal.set(principal)
            try:
                return await behavior(request, context)
            finally:
                current_principal.reset(token)
                authenticator.release(principal)

        return unary

    def wrap_stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        if required_role(method) is None:
            return behavior  # type: ignore[no-any-return]
        authenticator = self.authenticator

        async def stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            principal = authenticator.admit(method, context.invocation_metadata())
            assert principal is not None
            current_principal.set(principal)  # this generator runs in the call's own task
            replies = stream_of(behavior, request, context)
            try:
                async for response in replies:
                    yield response
            finally:
                await replies.aclose()
                authenticator.release(principal)

        return stream
