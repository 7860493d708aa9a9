"""The web console on the session mesh, in a real headless Chromium driven over the DevTools protocol: the models
table lists every registered model, a playground chat streams its answer, an uploaded bus.jpg gets its boxes drawn,
`auto`'s decisions and a fine-tuning job's loss curve show; plus the console's HTTP surface (auth, limits, errors)
and ListRoutingDecisions. Screenshots go to a pytest temporary folder, printed."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import yaml

from aisemble.common.v1 import common_pb2
from aisemble.finetune.v1 import finetune_service_pb2 as fpb
from aisemble.finetune.v1 import finetune_service_pb2_grpc
from aisemble.llm.v1 import llm_service_pb2 as lpb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.vision.v1 import vision_service_pb2 as vpb
from aisemble.vision.v1 import vision_service_pb2_grpc
from tests.assets.pictures import bus_jpg
from tests.browser import Page, chromium_page
from tests.e2e.conftest import REPO, admin_key

pytestmark = pytest.mark.slow

MEDICAL = "The patient has a fever and a cough. What should I do?"
DETECTOR = "yolov8-fall"
BOX_COLOUR = (255, 0, 102)  # console.js strokes boxes in #ff0066
BOGUS_KEY = "ais_00000000_" + "x" * 43


@dataclass
class Console:
    """The session mesh's console: its base URL, the admin key, a channel to the first gateway, the screenshots."""

    url: str
    key: str
    channel: grpc.Channel
    shots: Path

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.key}")]

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def console(mesh, tmp_path_factory) -> Console:
    channel, _process, folder, _output = mesh
    address = yaml.safe_load((folder / "mesh.yaml").read_text())["http"]["address"]
    shots = tmp_path_factory.mktemp("console-screenshots")
    print(f"\nconsole screenshots: {shots}")
    return Console(f"http://{address}", admin_key(folder), channel, shots)


@pytest.fixture(scope="module")
def page(console):
    """One Chromium tab on /console, logged in with the admin key through the page's own form."""
    with chromium_page() as tab:
        tab.goto(f"{console.url}/console")
        tab.evaluate(f"document.getElementById('api-key').value = {json.dumps(console.key)}")
        tab.evaluate("document.querySelector('#login button[type=submit]').click()")
        tab.wait_for("document.getElementById('key-state').textContent === 'key set for this tab'")
        assert console.key not in tab.evaluate("location.href")
        yield tab
        assert not tab.errors(), tab.errors()


def _show(page: Page, tab: str) -> None:
    page.evaluate(f"location.hash = {json.dumps(tab)}")
    page.wait_for(f"!document.getElementById({json.dumps(tab)}).hidden")


def test_the_page_is_public_but_holds_no_data_and_forbids_inline_and_remote_scripts(console):
    with httpx.Client(base_url=console.url, timeout=30) as client:
        for path, media in (("/console", "text/html"), ("/console/console.js", "text/javascript")):
            reply = client.get(path)
            assert reply.status_code == 200 and reply.headers["content-type"].startswith(media)
            policy = reply.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "http" not in policy
        assert DETECTOR not in client.get("/console").text  # the model list comes from the API, with a key
        missing = client.get("/console/secrets.txt")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"


def test_every_data_endpoint_checks_the_key(console):
    with console.http(BOGUS_KEY) as client:
        for method, path, body in (
            ("GET", "/console/api/models", None),
            ("GET", "/console/api/decisions", None),
            ("GET", "/console/api/jobs", None),
            ("GET", "/console/api/jobs/job-x/events", None),
            ("POST", "/console/api/detect", {"model": DETECTOR, "image": base64.b64encode(bus_jpg()).decode()}),
        ):
            refused = client.request(method, path, json=body)
            assert refused.status_code == 401, (path, refused.text)
            assert refused.json()["error"]["type"] == "authentication_error"


def test_bad_console_requests_get_clear_errors(console):
    with console.http() as client:
        cases = [
            ({"model": DETECTOR, "image": "not base64!"}, 400, "image"),
            ({"model": DETECTOR, "image": base64.b64encode(b"not an image").decode()}, 400, "image"),
            ({"model": DETECTOR}, 400, "image"),
            ({"model": "no-such-model", "image": base64.b64encode(bus_jpg()).decode()}, 404, None),
        ]
        for body, status, param in cases:
            reply = client.post("/console/api/detect", json=body)
            assert reply.status_code == status, (body.keys(), reply.text)
            error = reply.json()["error"]
            assert error["message"] and "Traceback" not in error["message"] and error["param"] == param
        unknown_job = client.get("/console/api/jobs/job-00000000/events")
        assert unknown_job.status_code == 404 and unknown_job.json()["error"]["code"] == "job_not_found"
        assert client.get("/console/api/decisions?limit=0").json()["error"]["param"] == "limit"


def test_the_gateway_keeps_auto_decisions_and_the_registry_refers_there(console, targets):
    stub = llm_service_pb2_grpc.LlmServiceStub(console.channel)
    reply = stub.Chat(
        lpb.ChatRequest(
            model="auto", messages=[lpb.ChatMessage(role=lpb.CHAT_ROLE_USER, content=MEDICAL)], max_output_tokens=2
        ),
        timeout=120,
    )
    registry = registry_service_pb2_grpc.ModelRegistryServiceStub(console.channel)
    newest = registry.ListRoutingDecisions(rpb.ListRoutingDecisionsRequest(max_decisions=1), timeout=30)
    assert len(newest.decisions) == 1 and newest.capacity == 256
    decision = newest.decisions[0]
    assert decision.method == "/aisemble.llm.v1.LlmService/Chat" and decision.task == common_pb2.TASK_TEXT_GENERATION
    assert decision.selection == reply.selection and decision.detected_domain == "medical"
    assert MEDICAL not in str(decision)  # the call's text is not kept
    assert {c.model for c in decision.candidates} >= {reply.selection.model}
    others = registry.ListRoutingDecisions(rpb.ListRoutingDecisionsRequest(task=common_pb2.TASK_OBJECT_DETECTION))
    assert all(d.task == common_pb2.TASK_OBJECT_DETECTION for d in others.decisions)
    with pytest.raises(grpc.RpcError) as bad:
        registry.ListRoutingDecisions(rpb.ListRoutingDecisionsRequest(max_decisions=-1))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as elsewhere:
        registry_service_pb2_grpc.ModelRegistryServiceStub(targets["registry"].channel).ListRoutingDecisions(
            rpb.ListRoutingDecisionsRequest(), metadata=console.metadata, timeout=30
        )
    assert elsewhere.value.code() == grpc.StatusCode.UNIMPLEMENTED and "gateway" in elsewhere.value.details()


def test_the_models_table_lists_every_registered_model(console, page):
    registry = registry_service_pb2_grpc.ModelRegistryServiceStub(console.channel)
    registered = {m.name for m in registry.ListModels(rpb.ListModelsRequest(), metadata=console.metadata).models}
    _show(page, "models")
    shown = page.wait_for(
        f"(() => {{ const names = Array.from(document.querySelectorAll('#models-body tr'), r => r.dataset.model);"
        f" return names.length === {len(registered)} && names; }})()"
    )
    assert set(shown) == registered
    health = page.evaluate("Array.from(document.querySelectorAll('#models-body td.health'), c => c.textContent)")
    assert set(health) == {"serving"}
    page.wait_for("document.getElementById('models-updated').textContent.includes('from 2 of 2 gateway')")
    page.screenshot(console.shots / "console-models.png")


def test_the_page_refuses_an_inline_script(page):
    injected = (
        "(() => { window.injected = false; const s = document.createElement('script');"
        " s.textContent = 'window.injected = true'; document.head.append(s); return window.injected; })()"
    )
    assert page.evaluate(injected) is False
    page.events.clear()  # the CSP violation it logged is the expected one


def test_a_playground_chat_streams_its_answer_in_pieces(console, page):
    _show(page, "playground")
    page.wait_for("!!document.querySelector('#chat-model option[value=\"smollm2-135m-onnx\"]')")
    page.evaluate(
        "(() => { const out = document.getElementById('chat-output'); window.growth = [];"
        " new MutationObserver(() => window.growth.push(out.textContent.length))"
        ".observe(out, {childList: true, characterData: true, subtree: true}); })()"
    )
    page.evaluate("document.getElementById('chat-model').value = 'auto'")
    page.evaluate("document.getElementById('chat-max').value = '24'")
    page.evaluate("document.getElementById('chat-send').click()")
    meta = page.wait_for(
        "(() => { const t = document.getElementById('chat-meta').textContent;"
        " return (t.startsWith('model ') || t.startsWith('error')) && t; })()",
        seconds=120,
    )
    assert meta.startswith("model smollm2-135m"), meta
    text = page.evaluate("document.getElementById('chat-output').textContent")
    growth = [length for length in page.evaluate("window.growth") if length > 0]
    # Each observer callback is one turn of the page's event loop: more than one means the text arrived in pieces.
    assert text.strip() and len(growth) >= 2 and growth == sorted(growth) and growth[-1] == len(text), growth


def test_an_uploaded_bus_shows_its_detections_drawn(console, page, tmp_path):
    picture = tmp_path / "bus.jpg"
    picture.write_bytes(bus_jpg())
    direct = vision_service_pb2_grpc.VisionServiceStub(console.channel).Detect(
        vpb.DetectRequest(model=DETECTOR, image=common_pb2.Image(data=picture.read_bytes())), timeout=120
    )
    assert direct.detections
    _show(page, "playground")
    page.wait_for(f"!!document.querySelector('#detect-model option[value={json.dumps(DETECTOR)}]')")
    page.evaluate(f"document.getElementById('detect-model').value = {json.dumps(DETECTOR)}")
    page.set_files("#detect-file", picture)
    boxes = int(page.wait_for("document.getElementById('detect-canvas').dataset.boxes", seconds=120))
    assert boxes == len(direct.detections) > 0
    assert page.evaluate("document.querySelectorAll('#detect-body tr').length") == boxes
    # The boxes were drawn: the middle of each box's left edge is the stroke's colour on the canvas.
    scale = float(page.evaluate("document.getElementById('detect-canvas').dataset.scale"))
    for found in direct.detections:
        x, y = round(found.box.x_min * scale), round((found.box.y_min + found.box.y_max) / 2 * scale)
        pixel = page.evaluate(
            f"Array.from(document.getElementById('detect-canvas').getContext('2d').getImageData({x}, {y}, 1, 1).data)"
        )
        assert all(abs(a - b) <= 40 for a, b in zip(pixel[:3], BOX_COLOUR, strict=True)), (found, pixel)
    page.screenshot(console.shots / "console-playground.png")


def test_the_routing_page_shows_auto_decisions_with_their_reasons(console, page):
    body = {"model": "auto", "messages": [{"role": "user", "content": MEDICAL}], "max_tokens": 2, "stream": True}
    with console.http() as client:
        reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200 and reply.text.endswith("data: [DONE]\n\n"), reply.text
    _show(page, "routing")
    model = reply.headers["x-aisemble-model"]
    found = page.wait_for(
        "Array.from(document.querySelectorAll('#routing-body tr'), r => r.textContent)"
        ".find(t => t.includes('StreamChat · text-generation') && t.includes('medical')"
        f" && t.includes({json.dumps(model)}))"
    )
    assert "scored" in found
    page.screenshot(console.shots / "console-routing.png")


def test_a_fine_tuning_job_shows_its_loss_curve_as_it_trains(console, page):
    examples = [json.loads(line) for line in (REPO / "data" / "domain_classification.jsonl").read_text().splitlines()]
    name = f"console-demo-{secrets.token_hex(3)}"
    jobs = finetune_service_pb2_grpc.FineTuneServiceStub(console.channel)
    created = jobs.CreateFineTuneJob(
        fpb.CreateFineTuneJobRequest(
            base_model="minilm-l6",
            task=fpb.FINE_TUNE_TASK_TEXT_CLASSIFICATION,
            examples=fpb.InlineExamples(
                classification_examples=[
                    fpb.ClassificationExample(text=e["text"], label=e["label"]) for e in examples[:160]
                ]
            ),
            hyperparameters=fpb.Hyperparameters(epochs=4, seed=7),
            result_model_name=name,
        ),
        metadata=console.metadata,
        timeout=60,
    )
    job_id = created.job.job_id
    try:
        _show(page, "jobs")
        selector = json.dumps(f"[data-job='{job_id}'] button")
        page.wait_for(f"!!document.querySelector({selector})", seconds=30)
        page.evaluate(f"document.querySelector({selector}).click()")
        events = [r.event for r in jobs.WatchFineTuneJob(fpb.WatchFineTuneJobRequest(job_id=job_id), timeout=600)]
        train = [e for e in events if e.HasField("progress") and e.progress.HasField("train_loss")]
        evaluations = [e for e in events if e.HasField("evaluation")]
        assert train and evaluations
        page.wait_for("document.getElementById('loss-caption').textContent.includes('(succeeded)')", seconds=60)
        page.wait_for(
            f"document.querySelector({json.dumps(f'[data-job={job_id!r}]')}).textContent.includes('succeeded')"
        )
        drawn = page.evaluate(
            "['train', 'validation'].map(c => document.querySelectorAll('#loss-chart circle.' + c).length)"
        )
        assert drawn == [len(train), len(evaluations)]
        assert page.evaluate("document.querySelectorAll('#loss-chart polyline').length") == 2
        page.screenshot(console.shots / "console-finetuning.png")
    finally:
        registry = registry_service_pb2_grpc.ModelRegistryServiceStub(console.channel)
        try:
            registry.DeregisterModel(rpb.DeregisterModelRequest(name=name), metadata=console.metadata, timeout=30)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND  # the job did not get as far as registering it
