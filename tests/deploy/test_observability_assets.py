"""The observability files (deploy/observability): the Grafana dashboard, the Prometheus scrape configuration and
its alerting rules parse, use only metrics the mesh exports, follow the dashboard's variables, and scrape the
metrics ports configs/mesh.yaml gives the local mesh. Data only: no server, no Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"

#: Every metric the mesh's processes export (Prometheus text names). A histogram is listed by its base name.
EXPORTED_METRICS = {
    # every process
    "aisemble_rpc_requests_total",
    "aisemble_rpc_errors_total",
    "aisemble_rpc_latency_seconds",
    "aisemble_model_requests_total",
    "aisemble_model_request_duration_seconds",
    "aisemble_model_time_to_first_token_seconds",
    "aisemble_model_inter_token_latency_seconds",
    "aisemble_model_prompt_tokens_total",
    "aisemble_model_generation_tokens_total",
    "aisemble_model_cost_total",
    "aisemble_calls_in_flight",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_threads",
    # gateway
    "aisemble_model_cache_hits_total",
    "aisemble_model_cache_misses_total",
    # llm service
    "aisemble_llm_batch_running",
    "aisemble_llm_batch_waiting",
    "aisemble_llm_batch_size",
    "aisemble_llm_queue_wait_seconds",
    # nlp service
    "aisemble_batcher_batch_size",
    "aisemble_batcher_queued",
    # supervisor
    "aisemble_process_restarts_total",
    "aisemble_process_up",
}
HISTOGRAMS = {
    "aisemble_rpc_latency_seconds",
    "aisemble_model_request_duration_seconds",
    "aisemble_model_time_to_first_token_seconds",
    "aisemble_model_inter_token_latency_seconds",
    "aisemble_llm_batch_size",
    "aisemble_llm_queue_wait_seconds",
    "aisemble_batcher_batch_size",
}
METRIC_NAME = re.compile(r"\b(?:aisemble|process)_[A-Za-z0-9_:]*")
HISTOGRAM_SUFFIX = re.compile(r"_(?:bucket|sum|count)$")
DATASOURCE = "${datasource}"
EXPECTED_ALERTS = {
    "AisembleModelHighErrorRatio",
    "AisembleModelHighLatency",
    "AisembleModelSlowFirstToken",
    "AisembleLlmBatchQueueFilling",
    "AisembleProcessRestarting",
    "AisembleProcessDown",
}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


DASHBOARD: dict[str, Any] = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text(encoding="utf-8"))
PROMETHEUS: dict[str, Any] = _yaml(OBSERVABILITY / "prometheus.yml")
ALERTS: dict[str, Any] = _yaml(OBSERVABILITY / "alerts.yml")
MESH: dict[str, Any] = _yaml(ROOT / "configs" / "mesh.yaml")


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    return [p for panel in panels for p in (panel, *all_panels(panel.get("panels", [])))]


PANELS = all_panels(DASHBOARD["panels"])
QUERY_PANELS = [p for p in PANELS if p["type"] != "row"]
EXPRESSIONS = [target["expr"] for panel in QUERY_PANELS for target in panel.get("targets", [])]
VARIABLES = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
RULES = [rule for group in ALERTS["groups"] for rule in group["rules"]]
JOBS = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}


def metric_names(expr: str) -> set[str]:
    """The mesh metrics an expression names, histogram series (_bucket, _sum, _count) by their base name."""
    names = set()
    for name in METRIC_NAME.findall(expr):
        base = HISTOGRAM_SUFFIX.sub("", name)
        names.add(base if base in HISTOGRAMS else name)
    return names


def test_dashboard_shape() -> None:
    assert DASHBOARD["schemaVersion"] == 39
    assert DASHBOARD["uid"] and DASHBOARD["title"]
    ids = [p["id"] for p in PANELS]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    assert {p["title"] for p in PANELS if p["type"] == "row"} == {
        "Overview",
        "Generation",
        "Batching",
        "Gateway",
        "Processes",
    }
    for panel in PANELS:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid), panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.mark.parametrize("panel", QUERY_PANELS, ids=lambda p: p["title"])
def test_panel(panel: dict[str, Any]) -> None:
    assert panel["datasource"]["uid"] == DATASOURCE
    assert panel["description"].strip() and "\n" not in panel["description"]
    assert panel["fieldConfig"]["defaults"]["unit"] in {"s", "reqps", "percentunit", "bytes", "short"}
    assert panel["targets"], "a panel without a query"
    for target in panel["targets"]:
        assert target["expr"].strip()
        assert target["datasource"]["uid"] == DATASOURCE
    ref_ids = [t["refId"] for t in panel["targets"]]
    assert len(ref_ids) == len(set(ref_ids))


def test_dashboard_variables() -> None:
    datasource = VARIABLES["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    model = VARIABLES["model"]
    assert model["type"] == "query" and model["multi"] and model["includeAll"]
    assert model["definition"] == model["query"]["query"] == "label_values(aisemble_model_requests_total, model)"
    assert model["datasource"]["uid"] == DATASOURCE
    service = VARIABLES["service"]
    assert service["type"] == "query" and re.fullmatch(r"label_values\(up(\{.*\})?, service\)", service["definition"])
    assert service["datasource"]["uid"] == DATASOURCE


def test_model_queries_follow_the_model_variable() -> None:
    scoped = [expr for expr in EXPRESSIONS if "aisemble_model_" in expr]
    assert scoped
    for expr in scoped:
        # Every selector of a model metric, not only the first one in the expression.
        for selector in re.findall(r"aisemble_model_\w+(\{[^}]*\})?", expr):
            assert 'model=~"$model"' in selector, expr


def test_rates_use_the_rate_interval() -> None:
    for expr in EXPRESSIONS:
        for window in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", expr


def test_only_exported_metrics() -> None:
    used: set[str] = set()
    for expr in [*EXPRESSIONS, *(v.get("definition", "") for v in VARIABLES.values()), *(r["expr"] for r in RULES)]:
        used |= metric_names(expr)
    assert used, "no metric found: the regex is wrong"
    unknown = used - EXPORTED_METRICS
    assert not unknown, f"not exported by the mesh: {sorted(unknown)}"
    # The dashboard covers every exported metric.
    assert EXPORTED_METRICS - {"aisemble_rpc_requests_total", "aisemble_rpc_errors_total"} <= used


def test_alerts() -> None:
    names = [rule["alert"] for rule in RULES]
    assert len(names) == len(set(names))
    assert set(names) >= EXPECTED_ALERTS
    for rule in RULES:
        assert rule["expr"].strip(), rule["alert"]
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), rule["alert"]
    by_name = {rule["alert"]: rule for rule in RULES}
    assert "aisemble_process_restarts_total[15m]" in by_name["AisembleProcessRestarting"]["expr"]
    assert by_name["AisembleProcessDown"]["for"] == "1m"
    assert by_name["AisembleLlmBatchQueueFilling"]["for"] == "5m"
    assert "> 0.05" in by_name["AisembleModelHighErrorRatio"]["expr"]


def test_prometheus_config() -> None:
    assert PROMETHEUS["global"]["scrape_interval"] == "15s"
    assert PROMETHEUS["rule_files"] == ["alerts.yml"]
    assert set(JOBS) == {"aisemble-local", "aisemble-kubernetes"}
    kubernetes = JOBS["aisemble-kubernetes"]
    (sd,) = kubernetes["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["namespaces"]["names"] == ["aisemble"]
    relabel = kubernetes["relabel_configs"]
    assert {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
        "action": "keep",
        "regex": "true",
    } in relabel
    assert any("__meta_kubernetes_pod_annotation_prometheus_io_port" in r["source_labels"] for r in relabel)
    # The pods' manifests put the member in app.kubernetes.io/component (app.kubernetes.io/name is "aisemble").
    service = [r for r in relabel if r.get("target_label") == "service"]
    assert [r["source_labels"] for r in service] == [["__meta_kubernetes_pod_label_app_kubernetes_io_component"]]


def _expected_local_targets() -> dict[str, set[str]]:
    """What configs/mesh.yaml says `aisemble up` serves metrics on: replica i on metrics_port + i, per member."""
    members = {"gateway": MESH["gateway"], "registry": MESH["registry"], **MESH["services"]}
    expected: dict[str, set[str]] = {}
    for name, member in members.items():
        if member.get("metrics_port", -1) < 0:
            continue
        addresses = member.get("addresses") or [member["address"]]
        expected[name] = {
            f"{address.rsplit(':', 1)[0]}:{member['metrics_port'] + index}" for index, address in enumerate(addresses)
        }
    if MESH["supervisor"].get("metrics_port", -1) >= 0:
        expected["supervisor"] = {f"127.0.0.1:{MESH['supervisor']['metrics_port']}"}
    return expected


def test_local_targets_match_the_mesh() -> None:
    scraped: dict[str, set[str]] = {}
    for group in JOBS["aisemble-local"]["static_configs"]:
        scraped.setdefault(group["labels"]["service"], set()).update(group["targets"])
    assert scraped == _expected_local_targets()
