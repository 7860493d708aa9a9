"""End to end: the mesh started as a user starts it (`aisemble up`), every public service called through the gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
import pytest

from aisemble.common.v1 import common_pb2
from aisemble.ensemble.v1 import ensemble_service_pb2 as epb
from aisemble.ensemble.v1 import ensemble_service_pb2_grpc
from aisemble.llm.v1 import llm_service_pb2 as lpb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.multimodal.v1 import multimodal_service_pb2 as mpb
from aisemble.multimodal.v1 import multimodal_service_pb2_grpc
from aisemble.nlp.v1 import nlp_service_pb2 as npb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.vision.v1 import vision_service_pb2 as vpb
from aisemble.vision.v1 import vision_service_pb2_grpc
from entrypoints.launcher import SERVICE_APPS, wait_healthy
from tests.assets.pictures import bus_jpg, encode, render_line
from tests.e2e.conftest import REPO, service_addresses, state_mesh


def test_the_table_says_what_serves_where(mesh):
    _channel, _process, _folder, output = mesh
    for service in SERVICE_APPS:
        assert f"  {service}" in output
    assert "smollm2-135m" in output and "yolov8-fall" in output


def test_llm_through_the_gateway(mesh):
    channel = mesh[0]
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    messages = [lpb.ChatMessage(role=lpb.CHAT_ROLE_USER, content="What is the capital of France?")]
    reply = stub.Chat(
        lpb.ChatRequest(model="smollm2-135m-onnx", messages=messages, max_output_tokens=16, temperature=0), timeout=120
    )
    assert "Paris" in reply.text
    streamed = list(
        stub.StreamChat(
            lpb.StreamChatRequest(model="auto", messages=messages, max_output_tokens=16, temperature=0), timeout=120
        )
    )
    assert streamed[0].selection.automatic and "".join(r.text for r in streamed)


def test_nlp_through_the_gateway(mesh):
    stub = nlp_service_pb2_grpc.NlpServiceStub(mesh[0])
    embedded = stub.Embed(
        npb.EmbedRequest(model="minilm-l6", texts=["eating food", "eating bread", "stock market"]), timeout=60
    )
    assert len(embedded.embeddings) == 3
    classified = stub.Classify(
        npb.ClassifyRequest(
            model="minilm-l6",
            texts=["The patient shows symptoms of fever"],
            candidate_labels=["medical", "legal", "financial"],
        ),
        timeout=60,
    )
    assert classified.results[0].labels[0].label == "medical"
    languages = stub.DetectLanguage(npb.DetectLanguageRequest(texts=["これは日本語の文です。"]), timeout=60)
    assert languages.results[0].language_code == "ja"


def test_vision_through_the_gateway(mesh):
    stub = vision_service_pb2_grpc.VisionServiceStub(mesh[0])
    detected = stub.Detect(vpb.DetectRequest(model="yolov8-fall", image=common_pb2.Image(data=bus_jpg())), timeout=120)
    assert sum(d.class_name == "Normal" for d in detected.detections) >= 2
    text = stub.Recognize(
        vpb.RecognizeRequest(model="ppocr-v4", image=common_pb2.Image(data=encode(render_line("Hello mesh")))),
        timeout=120,
    )
    assert "Hello" in text.full_text
    oriented = stub.ClassifyImage(
        vpb.ClassifyImageRequest(model="doc-orientation", image=common_pb2.Image(data=bus_jpg())), timeout=60
    )
    assert oriented.labels


def test_multimodal_through_the_gateway(mesh):
    stub = multimodal_service_pb2_grpc.MultimodalServiceStub(mesh[0])
    reply = stub.Analyze(
        mpb.AnalyzeRequest(image=common_pb2.Image(data=bus_jpg()), text="People standing next to a bus"), timeout=180
    )
    assert reply.HasField("detection") and not reply.part_failures


def test_ensemble_through_the_gateway(mesh):
    stub = ensemble_service_pb2_grpc.EnsembleServiceStub(mesh[0])
    reply = stub.Run(
        epb.RunRequest(
            members=[epb.Member(model="smollm2-135m"), epb.Member(model="smollm2-135m-onnx")],
            completion=lpb.CompleteRequest(prompt="The capital of France is", max_output_tokens=4, temperature=0),
        ),
        timeout=120,
    )
    assert len(reply.member_results) == 2 and reply.completion.text


def test_registry_and_status(mesh):
    channel, _process, folder, _ = mesh
    stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    models = {m.name: m for m in stub.ListModels(rpb.ListModelsRequest(), timeout=30).models}
    assert models["smollm2-135m-onnx"].health == rpb.MODEL_HEALTH_SERVING
    assert models["smollm2-135m-onnx"].stats.request_count >= 1
    env = {**os.environ, "AISEMBLE_CONFIG_DIR": str(folder), "AISEMBLE_STATE_DIR": str(folder / "state")}
    status = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "status"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and "smollm2-135m-onnx" in status.stdout and "SERVING" in status.stdout


def test_the_cli_asks_for_enforced_formats(mesh, tmp_path):
    """`aisemble chat --json-schema` and `aisemble complete --choice` against the running mesh."""
    import json

    _channel, _process, folder, _ = mesh
    env = {**os.environ, "AISEMBLE_CONFIG_DIR": str(folder), "AISEMBLE_STATE_DIR": str(folder / "state")}
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
    (tmp_path / "city.json").write_text(json.dumps(schema))

    def cli(*arguments: str) -> str:
        ran = subprocess.run(
            [sys.executable, "-m", "entrypoints.cli", *arguments, "--model", "smollm2-135m-onnx", "--temperature", "0"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
        return ran.stdout.splitlines()[0]

    answer = json.loads(
        cli(
            "chat", "The capital of Italy, as JSON.", "--max-tokens", "40", "--json-schema", str(tmp_path / "city.json")
        )
    )
    assert isinstance(answer.get("city"), str)
    assert cli("complete", "Is Rome in Italy? Answer:", "--max-tokens", "4", "--choice", "yes", "--choice", "no") in (
        "yes",
        "no",
    )


def test_service_ports_take_only_mesh_certificates(mesh, tmp_path):
    """Every service port refuses a plaintext client and a client whose certificate another CA signed (each
    refusal is a client that gets no answer for 1.5 s: the ports are tried at once)."""
    from concurrent.futures import ThreadPoolExecutor

    from aisemble.rpc.client import PLAINTEXT, Peer
    from aisemble.security.bootstrap import ensure_certificates
    from entrypoints.launcher import peer_of

    folder = mesh[2]
    mesh_config = state_mesh(folder)
    stranger = ensure_certificates(tmp_path / "other-ca")
    foreign = grpc.ssl_channel_credentials(
        root_certificates=(folder / "state" / "certs" / "ca.pem").read_bytes(),
        private_key=(stranger.folder / "cli.key").read_bytes(),
        certificate_chain=(stranger.folder / "cli.pem").read_bytes(),
    )
    services = {name: address for name, address in service_addresses(folder).items() if name != "gateway"}
    for name, address in services.items():
        assert wait_healthy(address, timeout_s=10, peer=peer_of(mesh_config, name)), f"{name} refuses the mesh"
    strangers = {
        (name, what): (address, peer)
        for name, address in services.items()
        for what, peer in (
            ("a plaintext client", PLAINTEXT),
            ("a certificate from another CA", Peer(foreign, peer_of(mesh_config, name).server_name)),
        )
    }
    with ThreadPoolExecutor(len(strangers)) as pool:
        answering = {
            key: pool.submit(wait_healthy, address, 1.5, peer=peer) for key, (address, peer) in strangers.items()
        }
    assert not [f"{name} answers {what}" for (name, what), answer in answering.items() if answer.result()]


def test_admin_rpcs_need_the_admin_key(mesh):
    """Without a key a DeregisterModel changes nothing; the admin key `aisemble up` made works and sees params."""
    channel, _process, folder, _ = mesh
    stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
    state = folder / "state" / "registry" / "models.yaml"  # the registry service's state, seeded from the folder
    before = state.read_bytes()
    with pytest.raises(grpc.RpcError) as caught:
        stub.DeregisterModel(rpb.DeregisterModelRequest(name="langid"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert state.read_bytes() == before
    anonymous = stub.GetModel(rpb.GetModelRequest(name="langid"), timeout=10).model
    assert not anonymous.model_path and not anonymous.params  # configuration is for admins only
    key_file = folder / "state" / "credentials" / "admin.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    admin = [("authorization", f"Bearer {key_file.read_text().strip()}")]
    seen = stub.GetModel(rpb.GetModelRequest(name="langid"), timeout=10, metadata=admin).model
    assert seen.model_path == "langid" and seen.params["file"] == "lid.176.ftz"


def test_ctrl_c_stops_everything(mesh):
    from entrypoints.launcher import peer_of

    _channel, process, folder, _ = mesh
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=90) == 0
    assert "mesh stopped" in (folder / "mesh.log").read_text()
    mesh_config = state_mesh(folder)
    for name, address in service_addresses(folder).items():
        peer = peer_of(mesh_config, name)
        assert not wait_healthy(address, timeout_s=0.5, peer=peer), f"{address} still answers after Ctrl-C"


def test_the_http_facade_the_launcher_started_answers_the_openai_sdk(mesh):
    """`aisemble up` runs the OpenAI-compatible facade in front of the gateways: the official SDK reaches it."""
    import yaml
    from openai import OpenAI

    folder = mesh[2]
    address = yaml.safe_load((folder / "mesh.yaml").read_text())["http"]["address"]
    client = OpenAI(base_url=f"http://{address}/v1", api_key="unused", max_retries=0, timeout=60)
    reply = client.chat.completions.create(
        model="smollm2-135m-onnx", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    assert reply.model == "smollm2-135m-onnx" and reply.usage is not None and reply.usage.completion_tokens >= 1
    listed = {model.id for model in client.models.list()}
    assert {"auto", "minilm-l6", "smollm2-135m"} <= listed
