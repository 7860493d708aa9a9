"""The mesh layout (configs/mesh.yaml): who listens where, replicas, and the shared limits."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aisemble.config.models import SERVICES
from aisemble.config.schema import CONFIG_DIR, ConfigError, integer, non_negative_number, read_yaml
from aisemble.config.security import SecurityConfig, address_is_loopback, parse_security

__all__ = [
    "DEFAULT_HTTP_ADDRESS",
    "DEFAULT_REGISTRY_ADDRESS",
    "MeshConfig",
    "ServiceEndpoint",
    "SupervisorConfig",
    "listen_address",
    "load_mesh",
]

#: Where the registry service listens unless mesh.yaml `registry:` says otherwise.
DEFAULT_REGISTRY_ADDRESS = "127.0.0.1:50060"
#: Where the OpenAI-compatible HTTP facade listens unless mesh.yaml `http:` or AISEMBLE_HTTP_ADDR say otherwise.
DEFAULT_HTTP_ADDRESS = "127.0.0.1:8000"


def listen_address(address: str) -> str:
    """Where a process told to serve `address` binds: host:port as is; for gRPC's DNS form `dns:///name:port`
    (how peers reach the replicas of a Kubernetes Service), every interface at that port."""
    if address.startswith("dns:"):
        return f"[::]:{address.rpartition(':')[2]}"
    return address


@dataclass(frozen=True)
class ServiceEndpoint:
    """Where one mesh service (the gateway, the registry) listens: `host:port` or `dns:///name:port` per replica.
    Replica i serves its Prometheus metrics on metrics_port + i (-1: none)."""

    name: str
    addresses: tuple[str, ...]
    metrics_port: int = -1


@dataclass(frozen=True)
class SupervisorConfig:
    """How `aisemble up` keeps the mesh's processes running (mesh.yaml `supervisor:`).

    A process that exits, or that fails its health checks for unhealthy_after_s once it has served, is
    restarted after backoff_initial_s, doubling to backoff_max_s; after max_restarts restarts of one process
    within window_s the launcher gives up: it stops everything and exits non-zero. metrics_port: Prometheus
    (process restarts and up), -1 for none.
    """

    max_restarts: int = 5
    window_s: float = 300.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    health_interval_s: float = 2.0
    unhealthy_after_s: float = 15.0
    metrics_port: int = -1


@dataclass(frozen=True)
class MeshConfig:
    """The mesh layout: the gateway, each service's replicas, the shared limits and the security settings.

    max_concurrent_rpcs counts unary calls, max_concurrent_streams streaming calls: long-lived streams
    (WatchModels, token streams) can never lock out unary calls, and health checks are outside both.
    """

    gateway: ServiceEndpoint
    services: Mapping[str, ServiceEndpoint]
    registry: ServiceEndpoint | None = None
    http_address: str = DEFAULT_HTTP_ADDRESS
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent_rpcs: int = 256
    max_concurrent_streams: int = 256
    grace_s: float = 10.0
    security: SecurityConfig = field(default_factory=SecurityConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)

    def endpoints(self) -> list[ServiceEndpoint]:
        """The registry, every service and the gateway, in the order the launcher starts them."""
        return [*([self.registry] if self.registry else []), *self.services.values(), self.gateway]

    def loopback_only(self) -> bool:
        """Whether every listener of the mesh binds this machine only."""
        addresses = [*(a for e in self.endpoints() for a in e.addresses), self.http_address]
        return all(address_is_loopback(a) for a in addresses)


_ADDRESS = re.compile(r"^(dns:///)?[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


def _endpoint(path: Path, name: str, raw: Any) -> ServiceEndpoint:
    where = f"{path}: service '{name}'"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    unknown = set(raw) - {"address", "addresses", "metrics_port"}
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
    addresses = raw.get("addresses", [raw["address"]] if "address" in raw else [])
    if not isinstance(addresses, list) or not addresses:
        raise ConfigError(f"{where}: field 'addresses': must be a non-empty list of host:port")
    for address in addresses:
        if not isinstance(address, str) or not _ADDRESS.match(address):
            raise ConfigError(f"{where}: field 'addresses': {address!r} is not host:port or dns:///name:port")
    metrics_port = raw.get("metrics_port", -1)
    if isinstance(metrics_port, bool) or not isinstance(metrics_port, int) or not -1 <= metrics_port <= 65535:
        raise ConfigError(f"{where}: field 'metrics_port': must be a port number, or -1 for none")
    return ServiceEndpoint(name=name, addresses=tuple(addresses), metrics_port=metrics_port)


def load_mesh(path: Path | None = None) -> MeshConfig:
    """Read and validate mesh.yaml; AISEMBLE_GATEWAY_ADDR overrides the gateway address."""
    path = path or CONFIG_DIR / "mesh.yaml"
    document = read_yaml(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must be a mapping")
    unknown = set(document) - {"gateway", "registry", "http", "services", "limits", "security", "supervisor"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    gateway = _endpoint(path, "gateway", document.get("gateway"))
    if os.environ.get("AISEMBLE_GATEWAY_ADDR"):
        gateway = ServiceEndpoint("gateway", (os.environ["AISEMBLE_GATEWAY_ADDR"],), gateway.metrics_port)
    registry = _endpoint(path, "registry", document.get("registry", {"address": DEFAULT_REGISTRY_ADDRESS}))
    if len(registry.addresses) != 1:
        raise ConfigError(f"{path}: service 'registry': exactly one address (the registry is the one writer)")
    http_address = _http_address(path, document.get("http"))
    raw_services = document.get("services") or {}
    if not isinstance(raw_services, dict):
        raise ConfigError(f"{path}: 'services' must be a mapping of service name to addresses")
    services = {}
    for name, raw in raw_services.items():
        if name not in SERVICES:
            raise ConfigError(f"{path}: service '{name}': not one of {', '.join(SERVICES)}")
        services[name] = _endpoint(path, name, raw)
    limits = document.get("limits") or {}
    if not isinstance(limits, dict):
        raise ConfigError(f"{path}: 'limits' must be a mapping")
    known_limits = {
        "max_message_bytes": integer(1024),
        "max_concurrent_rpcs": integer(1),
        "max_concurrent_streams": integer(1),
        "grace_s": non_negative_number,
    }
    values = _fields(path, "limits", limits, known_limits)
    security = parse_security(path, document.get("security"))
    supervisor = _supervisor(path, document.get("supervisor"))
    return MeshConfig(
        gateway=gateway,
        services=services,
        registry=registry,
        http_address=http_address,
        security=security,
        supervisor=supervisor,
        **values,
    )


def _http_address(path: Path, raw: Any) -> str:
    """The HTTP facade's listen address: AISEMBLE_HTTP_ADDR, else mesh.yaml `http: {address: ...}`."""
    if raw is not None and (not isinstance(raw, dict) or set(raw) - {"address"}):
        raise ConfigError(f"{path}: 'http' must be a mapping with one field, 'address'")
    address = os.environ.get("AISEMBLE_HTTP_ADDR") or (raw or {}).get("address", DEFAULT_HTTP_ADDRESS)
    if not isinstance(address, str) or not _ADDRESS.match(address) or address.startswith("dns:"):
        raise ConfigError(f"{path}: http: field 'address': {address!r} is not host:port")
    return address


def _supervisor(path: Path, raw: Any) -> SupervisorConfig:
    if raw is None:
        return SupervisorConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: 'supervisor' must be a mapping")
    checks: dict[str, Any] = {
        "max_restarts": integer(0),
        "window_s": non_negative_number,
        "backoff_initial_s": non_negative_number,
        "backoff_max_s": non_negative_number,
        "health_interval_s": non_negative_number,
        "unhealthy_after_s": non_negative_number,
        "metrics_port": integer(-1),
    }
    return SupervisorConfig(**_fields(path, "supervisor", raw, checks))


def _fields(path: Path, section: str, raw: dict[str, Any], checks: dict[str, Any]) -> dict[str, Any]:
    """Each field of a section checked by its check; an unknown field or a bad value is a ConfigError."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in checks:
            raise ConfigError(f"{path}: {section}: unknown field '{key}'; known: {', '.join(checks)}")
        try:
            values[key] = checks[key](value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {section}: field '{key}': {exc}") from None
    return values
