"""gRPC credentials from the mesh's certificate files: mTLS for the services, optional TLS on the gateway's port."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc

from aisemble.config.mesh import MeshConfig
from aisemble.config.security import SecurityConfig
from aisemble.errors import FailedPreconditionError
from aisemble.rpc.client import Peer, api_key
from aisemble.security.certs import member_files

__all__ = [
    "gateway_peer",
    "gateway_server_credentials",
    "mesh_gateway_peer",
    "registry_peer",
    "service_peer",
    "service_server_credentials",
]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FailedPreconditionError(
            f"{what} {path} cannot be read ({exc.strerror}): run `aisemble certs` (make run does it) or fix "
            "security.certs_dir / gateway_tls in mesh.yaml",
            reason="CERTIFICATE_MISSING",
            metadata={"file": str(path)},
        ) from None


def _member(security: SecurityConfig, name: str) -> tuple[bytes, bytes, bytes]:
    """(CA, certificate chain, private key) of one mesh member."""
    folder = security.certificates()
    cert_file, key_file = member_files(folder, name)
    return (
        _read(folder / "ca.pem", "the mesh CA"),
        _read(cert_file, f"the certificate of '{name}'"),
        _read(key_file, f"the private key of '{name}'"),
    )


def service_server_credentials(security: SecurityConfig, service: str) -> grpc.ServerCredentials | None:
    """A service's listener: TLS with its certificate, a client certificate from the mesh CA required
    (None when security.mtls is off)."""
    if not security.mtls:
        return None
    ca, chain, key = _member(security, service)
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=True)


def service_peer(security: SecurityConfig, service: str, identity: str) -> Peer:
    """How mesh member `identity` reaches `service`: its own certificate, the service's checked against the CA."""
    if not security.mtls:
        return Peer()
    ca, chain, key = _member(security, identity)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
    return Peer(credentials, server_name=service)


def gateway_server_credentials(security: SecurityConfig) -> grpc.ServerCredentials | None:
    """The gateway's public listener: server TLS with the configured certificate (None: plaintext)."""
    tls = security.gateway_tls
    if tls is None:
        return None
    chain, key = _read(tls.cert_file, "the gateway certificate"), _read(tls.key_file, "the gateway key")
    return grpc.ssl_server_credentials([(key, chain)])


def gateway_peer(security: SecurityConfig | None, identity: str, api_key: str | None) -> Peer:
    """How a mesh member (or the CLI) reaches the gateway: TLS when the gateway has it (trusting gateway_tls.ca_file,
    else the mesh CA, presenting the member's certificate when it has one), and its API key."""
    if security is None or security.gateway_tls is None:
        return Peer(api_key=api_key)
    tls = security.gateway_tls
    ca = _read(tls.ca_file or security.certificates() / "ca.pem", "the CA of the gateway certificate")
    cert_file, key_file = member_files(security.certificates(), identity)
    if cert_file.is_file() and key_file.is_file():
        credentials = grpc.ssl_channel_credentials(ca, key_file.read_bytes(), cert_file.read_bytes())
    else:
        credentials = grpc.ssl_channel_credentials(ca)
    return Peer(credentials, server_name="gateway" if tls.ca_file is None else None, api_key=api_key)


def mesh_gateway_peer(mesh: MeshConfig | None, identity: str) -> Peer:
    """How a mesh process (a composer, a follower, the fine-tuning service) reaches the gateway: as gateway_peer,
    with the mesh key (<state>/credentials/mesh.key, or $AISEMBLE_API_KEY / $AISEMBLE_API_KEY_FILE)."""
    return gateway_peer(mesh.security if mesh is not None else None, identity, api_key("mesh.key"))


def registry_peer(mesh: MeshConfig | None, identity: str) -> Peer:
    """How a mesh process (a gateway, a service's follower, the fine-tuning publisher) reaches the registry
    service: over mTLS as `identity` when the mesh has it, with the mesh key."""
    peer = service_peer(mesh.security, "registry", identity) if mesh is not None else Peer()
    return replace(peer, api_key=api_key("mesh.key"))
