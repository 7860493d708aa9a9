"""The mesh's certificate authority: a local CA and one certificate per mesh member, as PEM files (cryptography)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aisemble.security.keys import write_private

__all__ = ["MEMBERS", "CertificateAuthority", "IssuedCertificate", "member_files"]

#: Every mesh member that gets a certificate: the services, the gateway, the registry, the HTTP facade, and `cli`
#: (the launcher, the CLI).
MEMBERS = ("gateway", "registry", "llm", "nlp", "vision", "ensemble", "multimodal", "finetune", "http", "cli")
_CA_DAYS = 3650
_LEAF_DAYS = 397


def member_files(folder: Path, name: str) -> tuple[Path, Path]:
    """(certificate, private key) of one member in the certificates folder."""
    return folder / f"{name}.pem", folder / f"{name}.key"


@dataclass(frozen=True)
class IssuedCertificate:
    """One member's certificate as written."""

    name: str
    cert_file: Path
    key_file: Path
    not_after: dt.datetime
    created: bool


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _alt_names(name: str, hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([name, "localhost", "127.0.0.1", "::1", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


class CertificateAuthority:
    """A folder holding ca.pem / ca.key (0600) and `<member>.pem` / `<member>.key` (0600)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca_file = folder / "ca.pem"
        self.ca_key_file = folder / "ca.key"

    def exists(self) -> bool:
        """Whether the CA is there."""
        return self.ca_file.is_file() and self.ca_key_file.is_file()

    def create(self, force: bool = False) -> bool:
        """Make the CA (a new key pair, self-signed); False when one exists and force is not set."""
        if self.exists() and not force:
            return False
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ai-semble mesh CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        write_private(self.ca_key_file, _pem_key(key))
        write_private(self.ca_file, _pem_cert(cert))
        self.ca_file.chmod(0o644)
        return True

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def _valid(
        self, cert_file: Path, ca: x509.Certificate, names: list[x509.GeneralName], min_days: float = 30
    ) -> dt.datetime | None:
        """The certificate's expiry when it is from this CA, names all of `names` and is valid for at least
        min_days more, else None."""
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        remaining = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
        if cert.issuer != ca.subject or remaining < dt.timedelta(days=min_days):
            return None
        try:
            present = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            return None
        if not set(names) <= present:
            return None
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:  # noqa: BLE001 - any failure (signature, key type) means "not ours"
            return None
        return cert.not_valid_after_utc

    def issue(self, name: str, hosts: Sequence[str] = (), force: bool = False) -> IssuedCertificate:
        """A certificate for `name` (server and client use; SANs: the name, loopback, `hosts`), unless a valid one
        from this CA exists (force: always a new one)."""
        cert_file, key_file = member_files(self.folder, name)
        ca_cert, ca_key = self._load_ca()
        names = _alt_names(name, hosts)
        existing = None if force or not key_file.is_file() else self._valid(cert_file, ca_cert, names)
        if existing is not None:
            return IssuedCertificate(name, cert_file, key_file, existing, created=False)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        not_after = now + dt.timedelta(days=_LEAF_DAYS)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        write_private(key_file, _pem_key(key))
        write_private(cert_file, _pem_cert(cert))
        cert_file.chmod(0o644)
        return IssuedCertificate(name, cert_file, key_file, not_after, created=True)

    def ensure(
        self, names: Iterable[str] = MEMBERS, hosts: Sequence[str] = (), rotate: bool = False
    ) -> list[IssuedCertificate]:
        """The CA (made when missing) and a valid certificate for every name; rotate: new member certificates."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.create()
        return [self.issue(name, hosts, force=rotate) for name in names]
