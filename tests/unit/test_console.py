"""The web console's shipped files (no markup built from strings, no inline or remote script, a strict policy),
its JSON views over replicas (figures added up, decisions merged newest first), and ListRoutingDecisions' filters."""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf.duration_pb2 import Duration

from aisemble.common.v1 import common_pb2
from aisemble.registry.v1 import registry_service_pb2 as rpb
from facade.console.routes import _FILES, CONTENT_SECURITY_POLICY
from facade.console.views import decision_rows, model_rows
from gateway.decisions import RoutingLog
from gateway.selector import Decision, Features

STATIC = Path(__file__).resolve().parents[2] / "facade" / "console" / "static"


def test_the_static_folder_holds_exactly_the_served_files():
    assert sorted(p.name for p in STATIC.iterdir()) == sorted(_FILES)


def test_the_script_never_parses_strings_as_markup():
    script = (STATIC / "console.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "localStorage" not in script and "sessionStorage" in script  # the key lives for the tab only


def test_the_page_has_no_inline_or_remote_script_or_style():
    page = (STATIC / "console.html").read_text()
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/console/console.js" defer>']
    assert "<style" not in page and " style=" not in page and not re.search(r"\son[a-z]+=", page)
    assert "http://" not in page and "https://" not in page and "//" not in page.replace("/console/", "")
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "script-src 'self'" in CONTENT_SECURITY_POLICY


def _model(name: str, requests: int, tokens: int, tps: float, p95_ms: int, health: int) -> rpb.Model:
    model = rpb.Model(name=name, task=common_pb2.TASK_TEXT_GENERATION, health=health)
    model.stats.request_count, model.stats.output_tokens, model.stats.tokens_per_second = requests, tokens, tps
    model.stats.latency_p95.CopyFrom(Duration(nanos=p95_ms * 1_000_000))
    return model


def test_model_figures_add_up_over_replicas():
    a = _model("m", requests=2, tokens=100, tps=50.0, p95_ms=30, health=rpb.MODEL_HEALTH_NOT_SERVING)
    b = _model("m", requests=3, tokens=100, tps=25.0, p95_ms=80, health=rpb.MODEL_HEALTH_SERVING)
    [row] = model_rows([[a], [b]])
    assert row["requests"] == 5 and row["output_tokens"] == 200
    assert abs(row["tokens_per_second"] - 200 / (2 + 4)) < 1e-9  # 2 s and 4 s of generation
    assert row["latency_p95_ms"] == 80 and row["health"] == "serving"


def test_the_routing_log_is_bounded_and_merged_newest_first():
    log = RoutingLog(capacity=3)
    for index in range(5):
        selection = common_pb2.ModelSelection(model=f"m{index}", automatic=True, reason=f"reason {index}")
        log.record("/x/Chat", selection, Decision(f"m{index}", "r", "why", ()), Features(task="text-generation"))
    assert len(log) == 3 and [d.selection.model for d in log.recent()] == ["m4", "m3", "m2"]
    older, newer = rpb.RoutingDecision(), rpb.RoutingDecision()
    older.time.FromSeconds(10)
    newer.time.FromSeconds(20)
    older.selection.model, newer.selection.model = "old", "new"
    rows = decision_rows([[older], [newer]], limit=5)
    assert [r["selection"]["model"] for r in rows] == ["new", "old"]


async def test_list_routing_decisions_shows_a_key_only_the_decisions_for_its_models():
    from types import SimpleNamespace

    from aisemble.rpc.auth import Principal, current_principal
    from aisemble.security.keys import ApiKey
    from gateway.registry_servicer import GatewayRegistryServicer

    log = RoutingLog()
    for model, task in (("chat-a", "text-generation"), ("chat-b", "text-generation"), ("det", "object-detection")):
        selection = common_pb2.ModelSelection(model=model, automatic=True, reason=f"chose {model}")
        log.record("/x/Call", selection, Decision(model, "r", "why", ()), Features(task=task))
    gateway = SimpleNamespace(registry=None, resolver=SimpleNamespace(decisions=log))
    servicer = GatewayRegistryServicer(gateway)  # type: ignore[arg-type]
    token = current_principal.set(Principal(ApiKey("k1", "user", "digest", models=("chat-a", "det"))))
    try:
        seen = await servicer.ListRoutingDecisions(rpb.ListRoutingDecisionsRequest(), None)
        assert [d.selection.model for d in seen.decisions] == ["det", "chat-a"]
        generation = rpb.ListRoutingDecisionsRequest(task=common_pb2.TASK_TEXT_GENERATION, max_decisions=5)
        assert [d.selection.model for d in (await servicer.ListRoutingDecisions(generation, None)).decisions] == [
            "chat-a"
        ]
    finally:
        current_principal.reset(token)
