"""The `security:` section of mesh.yaml: mTLS, the gateway's public TLS, quotas' window, provider allowlists."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aisemble.config.schema import ConfigError, boolean, integer, non_negative_number, string, string_list
from aisemble.config.state import state_dir

__all__ = [
    "ProviderPolicy",
    "SecurityConfig",
    "TlsFiles",
    "address_is_loopback",
    "host_is_loopback",
    "parse_security",
]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENDPOINT_PATTERN = re.compile(r"^(https?)://(\*\.)?[A-Za-z0-9.\-\[\]:]+?(:(\d{1,5}|\*))?/?$")


def host_is_loopback(host: str) -> bool:
    """Whether a host name or IP address is this machine only (localhost, 127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_is_loopback(address: str) -> bool:
    """Whether a listen/target address (host:port, ipv4:a,b, dns:///h:p) reaches this machine only."""
    for part in address.removeprefix("ipv4:").removeprefix("ipv6:").removeprefix("dns:///").split(","):
        host = part.rpartition(":")[0] if ":" in part else part
        if not host_is_loopback(host):
            return False
    return True


@dataclass(frozen=True)
class TlsFiles:
    """A certificate chain and its private key (PEM files, e.g. a mounted Kubernetes secret); ca_file: the CA
    that mesh-internal clients trust for this listener (default: the mesh CA)."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None


@dataclass(frozen=True)
class ProviderPolicy:
    """Where a registered model may send requests, and which secrets it may name.

    endpoints: URLs allowed beyond loopback, as `scheme://host[:port]` patterns (`*.` before a host allows its
    subdomains, `:*` any port; no port: the scheme's default). Loopback is always allowed.
    api_key_envs: the environment variables a model's params.api_key_env may name.
    """

    endpoints: tuple[str, ...] = ()
    api_key_envs: tuple[str, ...] = ("OPENAI_API_KEY",)

    def endpoint_problem(self, url: str) -> str | None:
        """Why a model may not call `url` (None: it may)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"must be an http(s) URL with a host (got {url!r})"
        if parts.username or parts.password:
            return "must not carry credentials in the URL"
        if host_is_loopback(parts.hostname):
            return None
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return f"has an invalid port (got {url!r})"
        for pattern in self.endpoints:
            if _matches(pattern, parts.scheme, parts.hostname.lower(), port):
                return None
        allowed = ", ".join(self.endpoints) or "none beyond loopback"
        return (
            f"{parts.scheme}://{parts.hostname}:{port} is not in security.providers.endpoints of mesh.yaml "
            f"(allowed: {allowed})"
        )

    def api_key_env_problem(self, name: str) -> str | None:
        """Why a model may not read the environment variable `name` (None: it may)."""
        if name in self.api_key_envs:
            return None
        allowed = ", ".join(self.api_key_envs) or "none"
        return f"{name!r} is not in security.providers.api_key_envs of mesh.yaml (allowed: {allowed})"


def _matches(pattern: str, scheme: str, host: str, port: int) -> bool:
    parts = urlsplit(pattern.replace(":*", ":0"))
    if parts.scheme != scheme or not parts.hostname:
        return False
    wanted_host = parts.hostname.lower()
    if pattern.split("://", 1)[1].startswith("*."):
        suffix = wanted_host.removeprefix("*.")
        host_ok = host.endswith("." + suffix)
    else:
        host_ok = host == wanted_host
    wanted_port = parts.port if parts.port is not None else (443 if scheme == "https" else 80)
    return host_ok and (":*" in pattern or wanted_port == port)


@dataclass(frozen=True)
class SecurityConfig:
    """How the mesh protects itself (mesh.yaml `security:`; every field optional).

    mtls: every service listens only with TLS and requires a client certificate from the mesh CA.
    certs_dir: the mesh CA and the per-service certificates (`aisemble certs` makes them; default
    <state>/certs). gateway_tls: optional server TLS on the gateway's public port.
    quota_window_s: the window of the per-key rpm/tpm quotas (60: per minute).
    selection_max_chars: how much of a request's text `auto` reads.
    forward_metadata: caller metadata keys forwarded to the services beyond request id and trace context.
    """

    mtls: bool = True
    certs_dir: Path | None = None
    gateway_tls: TlsFiles | None = None
    providers: ProviderPolicy = field(default_factory=ProviderPolicy)
    quota_window_s: float = 60.0
    selection_max_chars: int = 4096
    forward_metadata: tuple[str, ...] = ()

    def certificates(self) -> Path:
        """The folder of the mesh CA and the services' certificates."""
        return self.certs_dir or state_dir() / "certs"


def _tls_files(where: str, raw: Any, base: Path) -> TlsFiles:
    if not isinstance(raw, dict) or not {"cert_file", "key_file"} <= set(raw):
        raise ConfigError(f"{where}: must be a mapping with cert_file and key_file (and optionally ca_file)")
    unknown = set(raw) - {"cert_file", "key_file", "ca_file"}
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
    paths = {key: base / string(value) for key, value in raw.items()}
    return TlsFiles(paths["cert_file"], paths["key_file"], paths.get("ca_file"))


def _providers(where: str, raw: Any) -> ProviderPolicy:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with endpoints and api_key_envs")
    unknown = set(raw) - {"endpoints", "api_key_envs"}
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
    try:
        endpoints = string_list(raw.get("endpoints", []))
        envs = string_list(raw.get("api_key_envs", list(ProviderPolicy.api_key_envs)))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for pattern in endpoints:
        if not _ENDPOINT_PATTERN.match(pattern):
            raise ConfigError(
                f"{where}: endpoints: {pattern!r} is not scheme://host[:port] (e.g. https://api.openai.com)"
            )
    for name in envs:
        if not _ENV_NAME.match(name):
            raise ConfigError(f"{where}: api_key_envs: {name!r} is not an environment variable name")
    return ProviderPolicy(endpoints, envs)


def parse_security(path: Path, raw: Mapping[str, Any] | None) -> SecurityConfig:
    """Validate the `security:` section of mesh.yaml (relative file paths are relative to mesh.yaml's folder)."""
    if raw is None:
        return SecurityConfig()
    where = f"{path}: security"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    checks: dict[str, Any] = {
        "mtls": boolean,
        "certs_dir": lambda v: path.parent / string(v),
        "gateway_tls": lambda v: _tls_files(f"{where}: gateway_tls", v, path.parent),
        "providers": lambda v: _providers(f"{where}: providers", v),
        "quota_window_s": non_negative_number,
        "selection_max_chars": integer(64),
        "forward_metadata": lambda v: tuple(s.lower() for s in string_list(v)),
    }
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in checks:
            raise ConfigError(f"{where}: unknown field '{key}'; known: {', '.join(checks)}")
        if value is None:
            continue
        try:
            values[key] = checks[key](value)
        except ValueError as exc:
            raise ConfigError(f"{where}: field '{key}': {exc}") from None
    if values.get("quota_window_s", 1.0) <= 0:
        raise ConfigError(f"{where}: field 'quota_window_s': must be > 0")
    return SecurityConfig(**values)
