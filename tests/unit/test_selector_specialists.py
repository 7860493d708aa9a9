"""`auto` and domain specialists: a model whose domains are only others' (a code adapter) wins its own domain's
prompts and no other prompt, however cheap or fast it looks; the shipped rules and registry do this."""

from __future__ import annotations

from aisemble.config.models import ModelSpec, load_models
from gateway.rules import SelectionRules, load_selection
from gateway.selector import Candidate, Features, select

TASK = "text-generation"


def _candidate(name: str, latency_p50_s: float | None = None, **fields) -> Candidate:
    return Candidate(
        ModelSpec(name=name, task=TASK, provider="transformers", service="llm", **fields), True, latency_p50_s
    )


def _features(domain: str) -> Features:
    return Features(task=TASK, domain=domain, domain_source="learned router", language="en", language_source="hint")


def test_a_specialist_wins_its_domain_and_loses_the_others_even_when_it_looks_faster():
    candidates = [
        _candidate("generalist", latency_p50_s=0.8, domains=("general",), languages=("en",)),
        _candidate("coder", domains=("code",), languages=("en",)),  # no latency observed yet: looks fastest
    ]
    rules = SelectionRules(domains={})
    assert select(_features("code"), candidates, rules).model == "coder"
    for domain in ("general", "medical"):
        decision = select(_features(domain), candidates, rules)
        assert decision.model == "generalist", decision.reason
        verdict = {c.model: c for c in decision.candidates}["coder"]
        assert verdict.score == -1.0 and verdict.reason.startswith(f"specialised in code, not {domain}")


def test_the_shipped_registry_sends_code_to_the_adapter_and_the_rest_to_the_cheaper_runtime():
    models, rules = load_models(), load_selection()
    generation = [m for m in models.values() if m.task == TASK]
    assert {"smollm2-135m", "smollm2-135m-onnx", "smollm2-135m-code"} <= {m.name for m in generation}
    # Latencies as they may be observed: the adapter never called yet, the ONNX runtime well used.
    latency = {"smollm2-135m-onnx": 0.4, "smollm2-135m": 0.9}
    candidates = [Candidate(m, True, latency.get(m.name)) for m in generation]
    code = select(_features("code"), candidates, rules)
    assert (code.model, code.rule) == ("smollm2-135m-code", "domain:code")
    assert "(domain code, speaks en" in code.reason
    for domain in ("general", "medical", "legal"):
        assert select(_features(domain), candidates, rules).model == "smollm2-135m-onnx", domain
