"""The `auto` selector: who is eligible, how candidates score, what it says when none is; the text it reads."""

from __future__ import annotations

from typing import Any

import pytest

from aisemble.common.v1 import common_pb2
from aisemble.config.models import ModelSpec
from aisemble.errors import Code, FailedPreconditionError
from aisemble.nlp.v1 import nlp_service_pb2
from aisemble.resolution import Rpc
from gateway.resolver import ModelResolver
from gateway.rules import SelectionRules, compile_pattern, load_selection
from gateway.selector import Candidate, Features, detect_domain, guess_language, select
from gateway.stats import StatsBook

TASK = "text-generation"
RULES = SelectionRules(
    domains={
        "medical": (compile_pattern(r"\bfever\b"), compile_pattern("発熱")),
        "code": (compile_pattern(r"\bdef\s"), compile_pattern(r"\bbug\b")),
    }
)  # no weights: the selector's defaults (domain +2, language +1 / -3, cost -1 per 1k, latency -0.5 per s)


def spec(name: str, **fields) -> ModelSpec:
    fields.setdefault("task", TASK)
    fields.setdefault("provider", "transformers")
    fields.setdefault("service", "llm")
    return ModelSpec(name=name, **fields)


def candidate(name: str, healthy: bool = True, latency_p50_s: float | None = None, **fields) -> Candidate:
    return Candidate(spec(name, **fields), healthy, latency_p50_s)


def verdicts(decision) -> dict[str, tuple[bool, float, str]]:
    return {c.model: (c.eligible, c.score, c.reason) for c in decision.candidates}


# guess_language and detect_domain


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("熱があります、どうすればいいですか", "ja"),  # kana (with kanji): Japanese, not Chinese
        ("我发烧了怎么办", "zh"),
        ("열이 나요", "ko"),
        ("I have a fever", "en"),
        ("Привет", "en"),  # the heuristic knows only the CJK scripts; anything else is taken as English
        ("   \n", ""),
        ("", ""),
    ],
)
def test_guess_language_by_script(text, language):
    assert guess_language(text) == language


def test_detect_domain_names_the_pattern_that_matched():
    assert detect_domain("My child has a FEVER", RULES) == ("medical", "pattern '\\bfever\\b'")
    assert detect_domain("子供が発熱しました", RULES) == ("medical", "pattern '発熱'")
    assert detect_domain("there is a bug in my loop", RULES) == ("code", "pattern '\\bbug\\b'")


def test_detect_domain_takes_the_first_domain_in_rule_order_and_defaults_to_general():
    assert detect_domain("def fever(): a bug", RULES)[0] == "medical"  # medical is listed before code
    reordered = SelectionRules(domains={"code": RULES.domains["code"], "medical": RULES.domains["medical"]})
    assert detect_domain("def fever(): a bug", reordered)[0] == "code"
    assert detect_domain("feverish debugging", RULES) == ("general", "no domain pattern matched")  # word bounds
    assert detect_domain("anything", SelectionRules(domains={})) == ("general", "no domain pattern matched")


def test_the_shipped_rules_detect_their_domains():
    rules = load_selection()
    assert detect_domain("The patient has a fever", rules)[0] == "medical"
    assert detect_domain("Write a haiku about autumn", rules)[0] == "creative"
    assert detect_domain("What is the weather like?", rules)[0] == "general"


# Eligibility


def test_a_model_of_another_task_is_not_eligible_nor_counted():
    decision = select(
        Features(TASK),
        [candidate("embedder", task="embedding", service="nlp"), candidate("writer")],
        RULES,
    )
    assert decision.model == "writer"
    assert verdicts(decision)["embedder"] == (False, 0.0, "serves embedding, not text-generation")
    assert "best of 1 eligible of 1;" in decision.reason  # the embedder is not one of the task's models


def test_an_unhealthy_model_is_not_eligible():
    decision = select(Features(TASK), [candidate("down", healthy=False), candidate("up")], RULES)
    assert decision.model == "up"
    assert verdicts(decision)["down"] == (False, 0.0, "not healthy (not SERVING)")
    assert "best of 1 eligible of 2;" in decision.reason


def test_a_context_window_too_small_for_prompt_plus_output_is_not_eligible():
    small, exact = candidate("small", max_tokens=100), candidate("exact", max_tokens=110)
    decision = select(Features(TASK, prompt_tokens=80, output_tokens=30), [small, exact], RULES)
    assert decision.model == "exact"  # 80 + 30 fits a window of exactly 110
    assert verdicts(decision)["small"] == (False, 0.0, "context window 100 < ~110 tokens needed")


def test_no_context_window_means_no_limit():
    decision = select(Features(TASK, prompt_tokens=10**6, output_tokens=10**6), [candidate("open")], RULES)
    assert decision.model == "open" and verdicts(decision)["open"][0]


def test_a_max_output_tokens_below_the_request_is_not_eligible():
    short, enough = candidate("short", max_output_tokens=16), candidate("enough", max_output_tokens=32)
    decision = select(Features(TASK, output_tokens=32), [short, enough], RULES)
    assert decision.model == "enough"
    assert verdicts(decision)["short"] == (False, 0.0, "max_output_tokens 16 < 32")


def test_no_eligible_model_is_failed_precondition_with_the_reason_of_each():
    candidates = [
        candidate("down", healthy=False),
        candidate("small", max_tokens=50),
        candidate("embedder", task="embedding", service="nlp"),
    ]
    with pytest.raises(FailedPreconditionError) as caught:
        select(Features(TASK, prompt_tokens=40, output_tokens=20), candidates, RULES)
    error = caught.value
    assert error.code == Code.FAILED_PRECONDITION
    assert error.reason == "NO_ELIGIBLE_MODEL"
    assert error.metadata == {"task": TASK}
    assert error.message == (
        "auto: no eligible model for task text-generation "
        "(down: not healthy (not SERVING); small: context window 50 < ~60 tokens needed)"
    )  # the embedder, of another task, is not listed


@pytest.mark.parametrize("candidates", [[], [candidate("embedder", task="embedding", service="nlp")]])
def test_no_model_of_the_task_says_none_is_registered(candidates):
    with pytest.raises(FailedPreconditionError, match=r"task text-generation \(none is registered\)") as caught:
        select(Features(TASK), candidates, RULES)
    assert caught.value.reason == "NO_ELIGIBLE_MODEL"


# Scoring


def test_a_model_of_the_request_domain_wins_and_the_rule_says_so():
    features = Features(TASK, domain="medical", domain_source="pattern '\\bfever\\b'")
    decision = select(features, [candidate("general"), candidate("doctor", domains=("medical", "legal"))], RULES)
    assert decision.model == "doctor"
    assert decision.rule == "domain:medical"
    assert verdicts(decision)["doctor"] == (True, 2.0, "domain medical")
    assert verdicts(decision)["general"] == (True, 0.0, "eligible")
    assert decision.reason.startswith("doctor scored 2 (domain medical), best of 2 eligible of 2;")
    assert "domain medical (pattern '\\bfever\\b')" in decision.reason


def test_the_general_domain_scores_nothing_and_is_the_default_rule():
    decision = select(Features(TASK), [candidate("a", domains=("general",)), candidate("b")], RULES)
    assert decision.rule == "default"
    assert verdicts(decision)["a"][1] == 0.0
    assert decision.model == "a"  # a tie: the first registered


def test_language_match_and_mismatch():
    features = Features(TASK, language="ja", language_source="langid 0.99")
    decision = select(
        features,
        [candidate("english", languages=("en",)), candidate("any"), candidate("japanese", languages=("en", "ja"))],
        RULES,
    )
    assert decision.model == "japanese"
    assert verdicts(decision)["english"] == (True, -3.0, "does not list ja")
    assert verdicts(decision)["any"] == (True, 0.0, "eligible")  # lists no languages: neither bonus nor penalty
    assert verdicts(decision)["japanese"] == (True, 1.0, "speaks ja")
    assert "language ja (langid 0.99)" in decision.reason


def test_no_language_known_scores_no_language():
    decision = select(Features(TASK), [candidate("english", languages=("en",))], RULES)
    assert verdicts(decision)["english"] == (True, 0.0, "eligible")
    assert "language" not in decision.reason


def test_the_cheaper_model_wins():
    decision = select(
        Features(TASK),
        [candidate("dear", cost_per_token=0.002), candidate("cheap", cost_per_token=0.0005)],
        RULES,
    )
    assert decision.model == "cheap"
    assert verdicts(decision)["dear"] == (True, -2.0, "cost 2/1k tokens")
    assert verdicts(decision)["cheap"] == (True, -0.5, "cost 0.5/1k tokens")


def test_the_faster_model_wins_and_an_unmeasured_one_pays_nothing():
    decision = select(
        Features(TASK),
        [candidate("slow", latency_p50_s=2.0), candidate("fast", latency_p50_s=0.2)],
        RULES,
    )
    assert decision.model == "fast"
    assert verdicts(decision)["slow"] == (True, -1.0, "p50 2000 ms")
    assert verdicts(decision)["fast"] == (True, -0.1, "p50 200 ms")
    unmeasured = select(Features(TASK), [candidate("slow", latency_p50_s=2.0), candidate("new")], RULES)
    assert unmeasured.model == "new"


def test_the_scores_add_up_with_the_rules_weights():
    rules = SelectionRules(
        domains=RULES.domains,
        weights={
            "domain_match": 5.0,
            "language_match": 0.5,
            "cost_per_1k_output_tokens": -2.0,
            "latency_p50_seconds": -1.0,
        },
    )
    features = Features(TASK, domain="code", language="en")
    coder = candidate("coder", latency_p50_s=0.5, domains=("code",), languages=("en",), cost_per_token=0.001)
    decision = select(features, [candidate("plain"), coder], rules)
    # 5 (domain) + 0.5 (language) - 2 * 1 (cost per 1k) - 1 * 0.5 (p50)
    assert verdicts(decision)["coder"] == (True, 3.0, "domain code, speaks en, cost 1/1k tokens, p50 500 ms")
    assert decision.model == "coder" and decision.rule == "domain:code"


def test_a_domain_bonus_can_be_outweighed_by_cost():
    features = Features(TASK, domain="medical")
    doctor = candidate("doctor", domains=("medical",), cost_per_token=0.003)  # +2 - 3
    decision = select(features, [doctor, candidate("free")], RULES)
    assert decision.model == "free"
    assert verdicts(decision)["doctor"][1] == -1.0


def test_a_tie_keeps_the_registry_order():
    first, second = candidate("first", languages=("en",)), candidate("second", languages=("en",))
    features = Features(TASK, language="en")
    assert select(features, [first, second], RULES).model == "first"
    assert select(features, [second, first], RULES).model == "second"


def test_every_candidate_is_reported_in_order():
    candidates = [candidate("a"), candidate("b", healthy=False), candidate("c", task="ocr", service="vision")]
    decision = select(Features(TASK), candidates, RULES)
    assert [c.model for c in decision.candidates] == ["a", "b", "c"]
    assert [c.eligible for c in decision.candidates] == [True, False, False]


# The text automatic selection reads: the first max_text_chars characters, for every feature


class _Registry:
    def __init__(self, *specs: ModelSpec) -> None:
        self.specs = {s.name: s for s in specs}

    def all(self) -> list[ModelSpec]:
        return list(self.specs.values())

    def find(self, name: str) -> ModelSpec | None:
        return self.specs.get(name)

    def get(self, name: str) -> ModelSpec:
        return self.specs[name]


class _Router:
    """Every model SERVING; the NLP calls of selection answer and record the texts they were sent."""

    def __init__(self, label: str = "general", score: float = 0.0) -> None:
        self.label, self.score = label, score
        self.sent: dict[str, list[str]] = {}

    def health_of(self, _model: str) -> str:
        return "SERVING"

    async def call(self, _service: str, rpc: str, request: Any, response_type: Any, timeout: float) -> Any:
        self.sent.setdefault(rpc, []).extend(request.texts)
        if response_type is nlp_service_pb2.ClassifyResponse:
            label = common_pb2.LabelScore(label=self.label, score=self.score)
            return response_type(results=[nlp_service_pb2.ClassificationResult(labels=[label])])
        return response_type(results=[nlp_service_pb2.LanguageDetectionResult(language_code="en", score=0.9)])


def _resolver(router: _Router, max_text_chars: int, *extra: ModelSpec) -> ModelResolver:
    rules = SelectionRules(domains=RULES.domains, learned_router_model="domain-classifier", language_detector="langid")
    registry = _Registry(
        spec("writer", max_tokens=8192),
        spec("doctor", max_tokens=8192, domains=("medical",)),
        spec("domain-classifier", task="text-classification", service="nlp"),
        spec("langid", task="language-detection", service="nlp"),
        *extra,
    )
    return ModelResolver(registry, router, rules, StatsBook(), max_text_chars=max_text_chars)  # type: ignore[arg-type]


def test_the_resolver_reads_4096_characters_by_default():
    assert ModelResolver(_Registry(), _Router(), RULES, StatsBook()).max_text_chars == 4096  # type: ignore[arg-type]


async def test_text_beyond_max_text_chars_does_not_influence_the_domain():
    resolver = _resolver(_Router(), 100)
    decision, features = await resolver.decide(TASK, "x" * 100 + " the child has a fever", 8)
    assert (features.domain, decision.model) == ("general", "writer")
    assert features.text == "x" * 100
    decision, features = await resolver.decide(TASK, "x" * 70 + " the child has a fever", 8)
    assert (features.domain, decision.model) == ("medical", "doctor")  # within the cap: read
    assert "domain medical (pattern '\\bfever\\b')" in decision.reason


async def test_the_learned_router_and_language_detector_get_at_most_max_text_chars():
    router = _Router(label="medical", score=0.95)
    features = await _resolver(router, 50).features(TASK, "a" * 10_000, 8)
    assert features.domain_source == "learned router domain-classifier 0.95"
    assert features.language == "en" and features.language_source == "langid 0.90"
    assert router.sent == {Rpc.CLASSIFY: ["a" * 50], Rpc.DETECT_LANGUAGE: ["a" * 50]}


async def test_the_script_heuristic_reads_only_the_cap_too():
    resolver = _resolver(_Router(), 10, spec("lid", task="language-detection", service="nlp"))
    features = await resolver.features("language-detection", "hello there " + "日本語です", None)
    assert (features.language, features.language_source) == ("en", "script heuristic")


async def test_the_token_estimate_still_counts_the_whole_prompt():
    resolver = _resolver(_Router(), 64)
    features = await resolver.features(TASK, "7" * 40_000, 1)
    assert features.prompt_tokens == 40_000 // 4 + 8  # the whole prompt must fit the context window
    with pytest.raises(FailedPreconditionError, match=r"writer: context window 8192 < ~10009 tokens needed"):
        await resolver.decide(TASK, "7" * 40_000, 1)
