"""Automatic model selection, pure: request features + registered candidates + rules -> a model and why."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from aisemble.config.models import ModelSpec
from aisemble.errors import FailedPreconditionError
from gateway.rules import SelectionRules

__all__ = ["Candidate", "Decision", "Features", "ScoredCandidate", "detect_domain", "guess_language", "select"]


@dataclass(frozen=True)
class Features:
    """What the selector knows about a request."""

    task: str
    text: str = ""  # the text selection read: the request's, cut to the resolver's max_text_chars
    domain: str = "general"
    domain_source: str = "default"  # "learned router (score 0.93)", "pattern '\\bfever\\b'", "default"
    language: str = ""
    language_source: str = ""  # "langid 0.99", "script heuristic", "hint"
    prompt_tokens: int = 0  # an estimate
    output_tokens: int = 0


@dataclass(frozen=True)
class Candidate:
    """A registered model with what the gateway observes of it."""

    spec: ModelSpec
    healthy: bool
    latency_p50_s: float | None = None


@dataclass(frozen=True)
class ScoredCandidate:
    """One candidate's verdict."""

    model: str
    eligible: bool
    score: float
    reason: str


@dataclass(frozen=True)
class Decision:
    """The chosen model, the rule that decided, a sentence saying why, and every candidate's verdict."""

    model: str
    rule: str
    reason: str
    candidates: tuple[ScoredCandidate, ...]


_CJK = re.compile(r"[\u3040-\u30ff]")  # kana: Japanese
_HAN = re.compile(r"[\u4e00-\u9fff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")


def guess_language(text: str) -> str:
    """A script heuristic for when the language detector is unreachable: ja, zh, ko, or en."""
    if _CJK.search(text):
        return "ja"
    if _HAN.search(text):
        return "zh"
    if _HANGUL.search(text):
        return "ko"
    return "en" if text.strip() else ""


def detect_domain(text: str, rules: SelectionRules) -> tuple[str, str]:
    """The first domain whose pattern matches: (domain, source). RE2 patterns: linear in the text."""
    for domain, patterns in rules.domains.items():
        for pattern in patterns:
            if pattern.search(text):
                return domain, f"pattern '{pattern.pattern}'"
    return "general", "no domain pattern matched"


def _score(candidate: Candidate, features: Features, rules: SelectionRules) -> ScoredCandidate:
    spec, weights = candidate.spec, rules.weights
    name = spec.name
    if spec.task != features.task:
        return ScoredCandidate(name, False, 0.0, f"serves {spec.task}, not {features.task}")
    if not candidate.healthy:
        return ScoredCandidate(name, False, 0.0, "not healthy (not SERVING)")
    needed = features.prompt_tokens + features.output_tokens
    if spec.max_tokens and needed > spec.max_tokens:
        return ScoredCandidate(name, False, 0.0, f"context window {spec.max_tokens} < ~{needed} tokens needed")
    if spec.max_output_tokens and features.output_tokens > spec.max_output_tokens:
        return ScoredCandidate(
            name, False, 0.0, f"max_output_tokens {spec.max_output_tokens} < {features.output_tokens}"
        )
    score, notes = 0.0, []
    if features.domain != "general" and features.domain in spec.domains:
        score += weights.get("domain_match", 2.0)
        notes.append(f"domain {features.domain}")
    elif spec.domains and "general" not in spec.domains and features.domain not in spec.domains:
        # A specialist (a code adapter) is no candidate for other prompts, however cheap or fast it looks.
        score += weights.get("domain_mismatch", -2.0)
        notes.append(f"specialised in {', '.join(spec.domains)}, not {features.domain}")
    if features.language and spec.languages:
        if features.language in spec.languages:
            score += weights.get("language_match", 1.0)
            notes.append(f"speaks {features.language}")
        else:
            score += weights.get("language_mismatch", -3.0)
            notes.append(f"does not list {features.language}")
    cost = spec.cost_per_token * 1000
    if cost:
        score += weights.get("cost_per_1k_output_tokens", -1.0) * cost
        notes.append(f"cost {cost:.4g}/1k tokens")
    if candidate.latency_p50_s is not None:
        score += weights.get("latency_p50_seconds", -0.5) * candidate.latency_p50_s
        notes.append(f"p50 {candidate.latency_p50_s * 1000:.0f} ms")
    return ScoredCandidate(name, True, round(score, 6), ", ".join(notes) or "eligible")


def select(features: Features, candidates: Sequence[Candidate], rules: SelectionRules) -> Decision:
    """Pick the best eligible candidate; FAILED_PRECONDITION when none is eligible."""
    scored = [_score(c, features, rules) for c in candidates]
    eligible = [s for s in scored if s.eligible]
    if not eligible:
        of_task = [s for s in scored if not s.reason.startswith("serves ")]
        detail = "; ".join(f"{s.model}: {s.reason}" for s in of_task) or "none is registered"
        raise FailedPreconditionError(
            f"auto: no eligible model for task {features.task} ({detail})",
            reason="NO_ELIGIBLE_MODEL",
            metadata={"task": features.task},
        )
    best = max(eligible, key=lambda s: s.score)  # max keeps the first of equals: models.yaml order
    parts = [f"task {features.task}", f"domain {features.domain} ({features.domain_source})"]
    if features.language:
        parts.append(f"language {features.language} ({features.language_source})")
    reason = (
        f"{best.model} scored {best.score:g} ({best.reason}), best of {len(eligible)} eligible of "
        f"{len([s for s in scored if not s.reason.startswith('serves ')])}; " + "; ".join(parts)
    )
    rule = f"domain:{features.domain}" if features.domain != "general" else "default"
    return Decision(best.model, rule, reason, tuple(scored))
