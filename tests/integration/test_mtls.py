"""mTLS inside the mesh, with real servers: a service port takes only clients with a mesh certificate; the gateway
reaches an mTLS LLM service and runs a real model; a composer (ensemble) over mTLS calls back through the gateway
with the mesh key, on the caller's behalf and within the caller's rights."""

from __future__ import annotations

import os
import socket
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisemble.config.security import SecurityConfig
from aisemble.ensemble.v1 import ensemble_service_pb2 as epb
from aisemble.ensemble.v1 import ensemble_service_pb2_grpc
from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.rpc.client import Peer, open_channel
from aisemble.rpc.server import ServerConfig
from aisemble.rpc.tls import service_peer, service_server_credentials
from aisemble.security.bootstrap import ensure_certificates
from aisemble.security.keys import KeyFile, write_private
from aisemble.security.quotas import UsageFile
from services.ensemble.app import build_server as build_ensemble
from services.llm.app import build_server as build_llm
from tests.conftest import status_details
from tests.integration.conftest import build_gateway, mesh_for, write_registry

MODEL, OTHER = "smollm2-135m-onnx", "smollm2-135m"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A mesh CA with its members' certificates, and another CA's (a stranger's)."""
    folder = tmp_path_factory.mktemp("mesh-certs")
    ensure_certificates(folder)
    stranger = ensure_certificates(tmp_path_factory.mktemp("other-ca"))
    return SecurityConfig(mtls=True, certs_dir=folder), SecurityConfig(mtls=True, certs_dir=stranger.folder)


@pytest.fixture(scope="module")
async def tls_mesh(certificates, registry, store, tmp_path_factory):
    """An LLM service (the ONNX SmolLM2) and an ensemble service, both mTLS only, behind a gateway with its own
    keys file; the ensemble reaches the gateway with a mesh key. Yields (gateway port, llm port, keys, security)."""
    security, _ = certificates
    folder = tmp_path_factory.mktemp("tls-mesh")
    keys = KeyFile(folder / "keys.json")
    _mesh_record, mesh_secret = keys.create("mesh")
    gateway_port = _free_port()
    llm = build_llm(
        ServerConfig(name="llm", credentials=service_server_credentials(security, "llm")),
        None,
        {MODEL: registry[MODEL]},
        store=store,
    )
    await llm.start()
    mesh = replace(mesh_for(), security=security)
    key_file = folder / "mesh.key"
    write_private(key_file, mesh_secret)
    previous = os.environ.get("AISEMBLE_API_KEY_FILE")
    os.environ["AISEMBLE_API_KEY_FILE"] = str(key_file)
    try:  # the ensemble and the gateway reach the mesh with the mesh key of this test's keys file
        ensemble = build_ensemble(
            ServerConfig(name="ensemble", credentials=service_server_credentials(security, "ensemble")),
            mesh,
            gateway_target=f"127.0.0.1:{gateway_port}",
        )
        await ensemble.start()
        gateway = build_gateway(
            ServerConfig(name="gateway", address=f"127.0.0.1:{gateway_port}"),
            replace(
                mesh_for(llm=[f"127.0.0.1:{llm.port}"], ensemble=[f"127.0.0.1:{ensemble.port}"]), security=security
            ),
            registry_path=write_registry(folder / "models.yaml", registry, [MODEL, OTHER]),
            store_root=store.root,
            keys=keys,
            usage=UsageFile(folder / "usage.json"),
        )
    finally:
        if previous is None:
            del os.environ["AISEMBLE_API_KEY_FILE"]
        else:
            os.environ["AISEMBLE_API_KEY_FILE"] = previous
    await gateway.start()
    yield gateway_port, llm.port, keys, security
    for server in (gateway, ensemble, llm):
        await server.stop(grace_s=0.5)


async def _health(port: int, peer: Peer) -> grpc.StatusCode | int:
    async with open_channel(f"127.0.0.1:{port}", peer=peer) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
            return int(reply.status)
        except grpc.aio.AioRpcError as exc:
            return exc.code()


async def test_a_service_port_takes_only_mesh_certificates(tls_mesh, certificates):
    _gateway_port, llm_port, _keys, security = tls_mesh
    _, stranger = certificates
    assert await _health(llm_port, service_peer(security, "llm", "cli")) == health_pb2.HealthCheckResponse.SERVING
    assert await _health(llm_port, Peer()) == grpc.StatusCode.UNAVAILABLE  # plaintext
    foreign = service_peer(stranger, "llm", "cli")  # a certificate another CA signed (and that CA's trust)
    assert await _health(llm_port, foreign) == grpc.StatusCode.UNAVAILABLE
    own_ca = (security.certificates() / "ca.pem").read_bytes()
    impostor = grpc.ssl_channel_credentials(
        own_ca,
        (stranger.certificates() / "cli.key").read_bytes(),
        (stranger.certificates() / "cli.pem").read_bytes(),
    )
    assert await _health(llm_port, Peer(impostor, "llm")) == grpc.StatusCode.UNAVAILABLE
    no_client_cert = grpc.ssl_channel_credentials(own_ca)
    assert await _health(llm_port, Peer(no_client_cert, "llm")) == grpc.StatusCode.UNAVAILABLE


async def test_the_gateway_reaches_an_mtls_service_and_runs_the_model(tls_mesh):
    gateway_port, _llm_port, _keys, _security = tls_mesh
    async with open_channel(f"127.0.0.1:{gateway_port}") as channel:
        reply = await llm_service_pb2_grpc.LlmServiceStub(channel).Complete(
            pb.CompleteRequest(model=MODEL, prompt="The capital of France is", max_output_tokens=4, temperature=0),
            timeout=60,
        )
    assert reply.text and reply.usage.output_tokens == 4


async def test_a_composer_calls_back_with_the_callers_rights(tls_mesh):
    gateway_port, _llm_port, keys, _security = tls_mesh
    _record, secret = keys.create("user", models=[MODEL])
    completion = pb.CompleteRequest(prompt="The capital of France is", max_output_tokens=3, temperature=0)
    async with open_channel(f"127.0.0.1:{gateway_port}", peer=Peer(api_key=secret)) as channel:
        stub = ensemble_service_pb2_grpc.EnsembleServiceStub(channel)
        reply = await stub.Run(
            epb.RunRequest(members=[epb.Member(model=MODEL), epb.Member(model=OTHER)], completion=completion),
            timeout=60,
        )
    by_model = {r.model: r for r in reply.member_results}
    assert by_model[MODEL].HasField("completion") and by_model[MODEL].completion.text
    assert by_model[OTHER].failure.reason == "MODEL_NOT_ALLOWED"  # the key may not call it, nor may the ensemble
    async with open_channel(f"127.0.0.1:{gateway_port}") as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ensemble_service_pb2_grpc.EnsembleServiceStub(anonymous).Run(
                epb.RunRequest(members=[epb.Member(model=MODEL)], completion=completion), timeout=30
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # a user key exists: the mesh is closed
    assert status_details(caught.value)[1]["ErrorInfo"].reason == "API_KEY_MISSING"


async def test_optional_tls_on_the_gateways_public_port(certificates, registry, store, tmp_path):
    """gateway_tls: the public port speaks TLS only; mesh processes and the CLI trust it through gateway_peer."""
    from aisemble.config.security import TlsFiles
    from aisemble.rpc.tls import gateway_peer, gateway_server_credentials

    security, _ = certificates
    folder = security.certificates()
    security = replace(security, gateway_tls=TlsFiles(folder / "gateway.pem", folder / "gateway.key"))
    gateway = build_gateway(
        ServerConfig(name="gateway", credentials=gateway_server_credentials(security)),
        replace(mesh_for(), security=security),
        registry_path=write_registry(tmp_path / "models.yaml", registry, [MODEL]),
        store_root=store.root,
        keys=KeyFile(tmp_path / "keys.json"),
        usage=UsageFile(tmp_path / "usage.json"),
    )
    port = await gateway.start()
    try:
        assert await _health(port, gateway_peer(security, "cli", None)) == health_pb2.HealthCheckResponse.SERVING
        assert await _health(port, Peer()) == grpc.StatusCode.UNAVAILABLE  # plaintext
    finally:
        await gateway.stop(grace_s=0.5)
