"""Scale-out on one machine: two gateways over one registry service, two NLP replicas, one of them killed."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from aisemble.nlp.v1 import nlp_service_pb2 as npb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from tests.e2e.conftest import NLP_REPLICAS, admin_key, git_status, replica_addresses
from tests.e2e.traffic import read_processes

MODEL = "minilm-l6"


def _embeds_served(metrics_port: int) -> float:
    """Embed calls an NLP replica finished OK, from its Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "aisemble_rpc_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("method") == "Embed" and sample.labels["code"] == "OK"
    )


def _metrics_ports(folder) -> list[int]:
    import yaml

    base = yaml.safe_load((folder / "mesh.yaml").read_text())["services"]["nlp"]["metrics_port"]
    return [base + index for index in range(NLP_REPLICAS)]


def _embed(stub, text: str) -> npb.EmbedResponse:
    return stub.Embed(npb.EmbedRequest(model=MODEL, texts=[text]), timeout=30)


def test_calls_spread_over_both_nlp_replicas_and_go_on_when_one_is_killed(mesh):
    channel, launcher, folder, _ = mesh
    stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
    ports = _metrics_ports(folder)
    before = [_embeds_served(port) for port in ports]
    for index in range(40):
        _embed(stub, f"spread {index} {time.time()}")  # distinct texts: the gateway's cache answers none
    served = [_embeds_served(port) - start for port, start in zip(ports, before, strict=True)]
    assert sum(served) >= 40 and min(served) >= 10, f"Embed calls per replica: {served}"

    # Four callers keep Embed busy while the second replica dies.
    victim = read_processes(folder)["nlp#1"]
    results: list[tuple[float, str]] = []
    stop = threading.Event()

    def caller(worker: int) -> None:
        count = 0
        while not stop.is_set():
            count += 1
            try:
                _embed(stub, f"failover {worker} {count} {time.time()}")
                results.append((time.monotonic(), "OK"))
            except grpc.RpcError as exc:
                results.append((time.monotonic(), exc.code().name))  # type: ignore[attr-defined]

    callers = [threading.Thread(target=caller, args=(worker,), daemon=True) for worker in range(4)]
    for thread in callers:
        thread.start()
    time.sleep(2)
    killed = time.monotonic()
    os.kill(int(victim["pid"]), signal.SIGKILL)
    time.sleep(4)
    stop.set()
    for thread in callers:
        thread.join(timeout=35)
    assert launcher.poll() is None
    failures = [(at, code) for at, code in results if code != "OK"]
    after = [code for at, code in results if at > killed + 1.0]
    # At most the victim's calls in flight fail (one per caller), and only with UNAVAILABLE; then all succeed.
    assert len(failures) <= len(callers) and all(code == "UNAVAILABLE" for _, code in failures), failures
    assert after and all(code == "OK" for code in after), f"{after.count('OK')} of {len(after)} OK after the kill"
    # The launcher brings the replica back (the next tests see two again).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entry = read_processes(folder).get("nlp#1", {})
        if entry.get("restarts") == int(victim["restarts"]) + 1 and entry.get("state") == "serving":
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the killed NLP replica did not come back: {read_processes(folder).get('nlp#1')}")


def test_a_model_registered_through_gateway_a_is_served_through_gateway_b(mesh):
    _channel, _launcher, folder, _ = mesh
    a_address, b_address = replica_addresses(folder, "gateway")
    admin = [("authorization", f"Bearer {admin_key(folder)}")]
    with grpc.insecure_channel(a_address) as a, grpc.insecure_channel(b_address) as b:
        registry_a = registry_service_pb2_grpc.ModelRegistryServiceStub(a)
        registry_b = registry_service_pb2_grpc.ModelRegistryServiceStub(b)
        entry = registry_a.GetModel(rpb.GetModelRequest(name=MODEL), metadata=admin, timeout=10).model
        entry.name = "minilm-l6-replicated"
        registry_a.RegisterModel(rpb.RegisterModelRequest(model=entry), metadata=admin, timeout=10)
        try:
            registered = time.monotonic()
            while time.monotonic() - registered < 1.0:
                listed = registry_b.ListModels(rpb.ListModelsRequest(), timeout=10).models
                if entry.name in {m.name for m in listed}:
                    break
                time.sleep(0.02)
            else:
                raise AssertionError("gateway B did not list the model registered through A within a second")
            # Every NLP replica follows the registry and loads it; gateway B routes to them.
            nlp_b = nlp_service_pb2_grpc.NlpServiceStub(b)
            request = npb.EmbedRequest(model=entry.name, texts=["the same words", "other words"])
            deadline = time.monotonic() + 120
            while True:
                try:
                    served = nlp_b.Embed(request, timeout=30)
                    break
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline, exc  # type: ignore[attr-defined]
                    time.sleep(0.5)
            assert served.selection.model == entry.name
            original = nlp_b.Embed(npb.EmbedRequest(model=MODEL, texts=list(request.texts)), timeout=30)
            for got, want in zip(served.embeddings, original.embeddings, strict=True):
                assert np.allclose(got.values, want.values, atol=1e-5)
        finally:
            registry_b.DeregisterModel(rpb.DeregisterModelRequest(name=entry.name), metadata=admin, timeout=10)


def test_using_the_mesh_leaves_the_checkout_as_it_was(mesh):
    """After every other test of the session (registrations, fine-tuning, kills), `git status` is unchanged:
    the registry's state, keys, certificates and jobs live in the state directory, never in configs/."""
    folder = mesh[2]
    assert git_status() == (folder / "git-status-before").read_text()
