"""selection.yaml's domain patterns: RE2 syntax, compiled at load, matched in time linear in the text."""

from __future__ import annotations

import re
import time

import pytest
import re2
import yaml

from aisemble.config.schema import CONFIG_DIR, ConfigError
from gateway.rules import compile_pattern, load_selection
from gateway.selector import detect_domain

SHIPPED = yaml.safe_load((CONFIG_DIR / "selection.yaml").read_text(encoding="utf-8"))["domains"]
SHIPPED_PATTERNS = [(domain, p) for domain, entry in SHIPPED.items() for p in entry["patterns"]]

# English and Japanese requests, and what Python's re found in them before the patterns moved to RE2.
REQUESTS = [
    ("The patient has a FEVER, what dose should I take?", "medical"),
    ("子供が発熱しました。病院に行くべきですか", "medical"),
    ("My Python function has a bug", "code"),
    ("このプログラムのバグを直して", "code"),
    ("```\nprint(1)\n```", "code"),
    ("Review this contract before the lawsuit", "legal"),
    ("弁護士に相談したい", "legal"),
    ("Should I invest while the interest rate is high?", "financial"),
    ("株を買うべきか", "financial"),
    ("Write a haiku about autumn", "creative"),
    ("俳句を作ってください", "creative"),
    ("What is 12 * 34?", "math"),
    ("x^2 - 4 = 0", "math"),
    ("Prove the theorem of Pythagoras", "math"),
    ("この方程式を解いて", "math"),
    ("What is the weather like?", "general"),
    ("feverish debugging of a classroom", "general"),  # word bounds: no \bfever\b, \bbug\b, \bclass\s
    ("今日はいい天気ですね", "general"),
]


def _python_re_domain(text: str) -> str:
    for domain, entry in SHIPPED.items():
        if any(re.search(p, text, re.IGNORECASE) for p in entry["patterns"]):
            return domain
    return "general"


def _best_of_three(text: str, rules) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        detect_domain(text, rules)
        best = min(best, time.perf_counter() - started)
    return best


def test_every_shipped_pattern_compiles_with_re2_in_file_order():
    rules = load_selection()
    assert list(rules.domains) == list(SHIPPED)
    for domain, entry in SHIPPED.items():
        compiled = rules.domains[domain]
        assert [p.pattern for p in compiled] == entry["patterns"]  # the source as written: no (?i) added
        assert all(type(p) is type(re2.compile("a")) for p in compiled)


@pytest.mark.parametrize(("text", "domain"), REQUESTS)
def test_the_shipped_patterns_find_the_domains_python_re_found(text, domain):
    assert _python_re_domain(text) == domain  # the table is right about the old engine
    assert detect_domain(text, load_selection())[0] == domain


@pytest.mark.parametrize(("domain", "pattern"), SHIPPED_PATTERNS)
def test_each_shipped_pattern_matches_where_python_re_matched(domain, pattern):
    compiled = compile_pattern(pattern)
    for text, _ in REQUESTS:
        assert bool(compiled.search(text)) == bool(re.search(pattern, text, re.IGNORECASE)), (domain, text)


def test_patterns_are_case_insensitive_and_name_themselves():
    rules = load_selection()
    assert detect_domain("THE PATIENT", rules) == ("medical", "pattern '\\bpatient'")
    assert compile_pattern(r"\bDef\s").search("def f():")


def test_word_classes_are_ascii_so_an_english_word_inside_japanese_text_has_bounds():
    # RE2's \b, \w, \d, \s are ASCII: a kana is not a word character (Python's re took it as one).
    assert detect_domain("このcontractを確認して", load_selection())[0] == "legal"
    assert not compile_pattern(r"\d").search("\uff11\uff12\uff13")  # full-width digits are not \d


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"\bfever(?!ish)", "invalid perl operator: (?!"),  # a lookahead
        (r"(?<=high )fever", "invalid perl operator: (?<"),  # a lookbehind
        (r"(dose)\s+\1", "invalid escape sequence: \\1"),  # a backreference
        ("[fever", "missing ]: [fever"),
    ],
)
def test_a_pattern_re2_cannot_compile_is_a_config_error_naming_domain_and_pattern(tmp_path, pattern, why):
    path = tmp_path / "selection.yaml"
    path.write_text(yaml.safe_dump({"domains": {"code": {"patterns": ["bug"]}, "medical": {"patterns": [pattern]}}}))
    with pytest.raises(ConfigError) as caught:
        load_selection(path)
    message = str(caught.value)
    assert f"domain 'medical': field 'patterns': {pattern!r} is not valid RE2 ({why}" in message
    assert "no lookarounds or backreferences" in message
    assert caught.value.reason == "INVALID_CONFIG"


@pytest.mark.parametrize(("unit", "tail"), [("7", ""), ("1", "+"), ("7 ", "")])
def test_matching_is_linear_in_the_text(unit, tail):
    # '\d+\s*[-+*/^]\s*\d+' over 40,000 digits took Python's backtracking re ~18 s (quadratic); RE2 ~3 ms.
    rules = load_selection()
    size = 40_000 // len(unit)
    short = _best_of_three(unit * (size // 10) + tail, rules)
    long = _best_of_three(unit * size + tail, rules)
    assert long < 0.5
    assert long < 30 * short + 0.05, f"10x the text took {long / short:.0f}x the time: not linear"
