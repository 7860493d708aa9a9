"""Keys, quotas, certificates, the roles per RPC and the security section of mesh.yaml, without servers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509

from aisemble.config.mesh import load_mesh
from aisemble.config.schema import ConfigError
from aisemble.config.security import address_is_loopback
from aisemble.errors import InvalidArgumentError, ResourceExhaustedError
from aisemble.rpc.auth import required_role
from aisemble.rpc.client import forwardable_metadata
from aisemble.security.bootstrap import ensure_certificates, ensure_local_key
from aisemble.security.keys import KeyFile, KeyRing, key_id_of
from aisemble.security.quotas import QuotaBook


def test_a_key_is_shown_once_and_stored_only_as_a_digest(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "auth" / "keys.json")
    record, secret = keys.create("user", name="ci", models=["m1"], rpm=3)
    assert key_id_of(secret) == record.key_id and secret.startswith(f"ais_{record.key_id}_")
    text = keys.path.read_text()
    assert secret not in text and secret.split("_", 2)[2] not in text
    assert json.loads(text)["keys"][0]["digest"] == record.digest
    assert keys.path.stat().st_mode & 0o777 == 0o600 and keys.path.parent.stat().st_mode & 0o777 == 0o700
    ring = KeyRing(keys)
    assert ring.find(secret) == record and ring.find(secret[:-1] + "x") is None and ring.find("nonsense") is None
    keys.revoke(record.key_id)
    assert ring.get(record.key_id) is not None and not KeyRing(keys).find(secret).active  # type: ignore[union-attr]
    with pytest.raises(InvalidArgumentError):
        keys.create("root")
    with pytest.raises(InvalidArgumentError):
        keys.create("user", rpm=0)


def test_local_keys_are_made_once_and_remade_when_revoked(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    path, made = ensure_local_key("admin", keys, tmp_path / "credentials")
    assert made and path.stat().st_mode & 0o777 == 0o600
    assert ensure_local_key("admin", keys, tmp_path / "credentials") == (path, False)
    keys.revoke(KeyRing(keys).find(path.read_text().strip()).key_id)  # type: ignore[union-attr]
    assert ensure_local_key("admin", keys, tmp_path / "credentials")[1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _key(tmp_path: Path, **limits):
    return KeyFile(tmp_path / "keys.json").create("user", **limits)[0]


def test_requests_per_window_with_the_time_to_retry(tmp_path: Path) -> None:
    clock, key = Clock(), _key(tmp_path, rpm=2)
    quotas = QuotaBook(window_s=60, clock=clock)
    quotas.admit(key)
    clock.now += 10
    quotas.admit(key)
    with pytest.raises(ResourceExhaustedError) as caught:
        quotas.admit(key)
    assert caught.value.reason == "RATE_LIMITED" and caught.value.retry_after_s == pytest.approx(50)
    clock.now += 50.01
    quotas.admit(key)  # the first left the window
    assert quotas.usage[key.key_id].requests == 3 and quotas.usage[key.key_id].rejected == 1


def test_output_tokens_per_window_and_calls_on_a_keys_behalf(tmp_path: Path) -> None:
    clock, key = Clock(), _key(tmp_path, tpm=100, rpm=1)
    quotas = QuotaBook(window_s=60, clock=clock)
    quotas.admit(key)
    quotas.add_tokens(key, 70, 0.5)
    clock.now += 5
    quotas.admit(key, count_request=False)  # the mesh's call on the key's behalf: rpm does not count it
    quotas.add_tokens(key, 40, 0.1)
    with pytest.raises(ResourceExhaustedError) as caught:
        quotas.admit(key, count_request=False)
    assert caught.value.reason == "TOKEN_QUOTA_EXCEEDED"
    assert caught.value.retry_after_s == pytest.approx(55)  # when the first 70 tokens leave, 40 < 100 remain
    assert quotas.usage[key.key_id].output_tokens == 110 and quotas.usage[key.key_id].cost == pytest.approx(0.6)


def test_concurrent_calls_are_released(tmp_path: Path) -> None:
    key = _key(tmp_path, max_concurrent=1)
    quotas = QuotaBook()
    quotas.admit(key)
    with pytest.raises(ResourceExhaustedError) as caught:
        quotas.admit(key)
    assert caught.value.reason == "CONCURRENCY_LIMITED"
    quotas.release(key)
    quotas.admit(key)


def test_every_write_needs_an_admin_and_health_is_open() -> None:
    registry, finetune = "/aisemble.registry.v1.ModelRegistryService/", "/aisemble.finetune.v1.FineTuneService/"
    assert required_role(registry + "DeregisterModel") == {"admin"}
    assert required_role(registry + "RegisterModel") == {"admin", "mesh"}
    for method in ("CreateFineTuneJob", "CancelFineTuneJob", "UploadTrainingFile"):
        assert required_role(finetune + method) == {"admin"}
    assert "user" in required_role(registry + "ListModels")  # type: ignore[operator]
    assert "user" in required_role("/aisemble.llm.v1.LlmService/Complete")  # type: ignore[operator]
    assert required_role("/grpc.health.v1.Health/Check") is None
    assert "user" in required_role("/some.Unknown/Method")  # type: ignore[operator]


def test_only_allowlisted_metadata_is_forwarded() -> None:
    sent = [
        ("authorization", "Bearer ais_x"),
        ("x-request-id", "r"),
        ("traceparent", "t"),
        ("cookie", "c"),
        ("x-tenant", "a"),
        ("x-aisemble-on-behalf-of", "k"),
    ]
    context = SimpleNamespace(invocation_metadata=lambda: sent)
    assert [k for k, _ in forwardable_metadata(context)] == ["x-request-id", "traceparent", "x-aisemble-on-behalf-of"]  # type: ignore[arg-type]
    assert ("x-tenant", "a") in forwardable_metadata(context, frozenset({"x-tenant"}))  # type: ignore[arg-type]


def test_certificates_are_made_once_and_reissued_for_new_hosts(tmp_path: Path) -> None:
    authority = ensure_certificates(tmp_path / "certs")
    first = (tmp_path / "certs" / "llm.pem").read_bytes()
    assert (tmp_path / "certs" / "llm.key").stat().st_mode & 0o777 == 0o600
    ensure_certificates(tmp_path / "certs")
    assert (tmp_path / "certs" / "llm.pem").read_bytes() == first  # still valid: kept
    ensure_certificates(tmp_path / "certs", ["llm.mesh.svc"])
    cert = x509.load_pem_x509_certificate((tmp_path / "certs" / "llm.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert {"llm", "localhost", "llm.mesh.svc"} <= set(names)
    ca = x509.load_pem_x509_certificate(authority.ca_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=300)
    issued = (tmp_path / "certs" / "llm.pem").read_bytes()
    ensure_certificates(tmp_path / "certs", ["llm.mesh.svc"], rotate=True)
    assert (tmp_path / "certs" / "llm.pem").read_bytes() != issued


def test_mesh_security_section(tmp_path: Path) -> None:
    shipped = load_mesh()
    assert shipped.security.mtls and shipped.loopback_only()
    assert shipped.security.providers.endpoint_problem("http://169.254.169.254/latest") is not None
    (tmp_path / "mesh.yaml").write_text(
        "gateway: {address: '0.0.0.0:50051'}\nservices: {}\n"
        "security: {mtls: false, quota_window_s: 5, providers: {endpoints: ['https://api.openai.com']}}\n"
    )
    mesh = load_mesh(tmp_path / "mesh.yaml")
    assert not mesh.security.mtls and mesh.security.quota_window_s == 5 and not mesh.loopback_only()
    assert mesh.security.providers.endpoint_problem("https://api.openai.com/v1") is None
    for bad in ("security: {tls: true}", "security: {providers: {endpoints: ['api.openai.com']}}"):
        (tmp_path / "mesh.yaml").write_text(f"gateway: {{address: '127.0.0.1:1'}}\n{bad}\n")
        with pytest.raises(ConfigError):
            load_mesh(tmp_path / "mesh.yaml")
    assert address_is_loopback("ipv4:127.0.0.1:1,127.0.0.2:2") and not address_is_loopback("10.0.0.1:5")
