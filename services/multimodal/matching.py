"""Which detected objects and recognised words a text mentions: exact, stemmed, fuzzy and embedding matches."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Candidate", "Match", "Term", "find_mentions", "normalise", "phrases", "terms_from"]

#: A term's source: "detection" (a class name) or "ocr" (a recognised word).
DETECTION, OCR = "detection", "ocr"
_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    _WORD.findall(
        "a an and are as at be but by for from has have he her his i in is it its of on or our she so that the "
        "their them there these they this to was we were what when where which who will with you your"
    )
)
#: The score of a same-stem match, and the least similarity a fuzzy spelling match needs (OCR misreads letters).
STEM_SCORE = 0.9
FUZZY_MIN = 0.8


def normalise(text: str) -> str:
    """Lower case, words separated by single spaces ("FEET_COVERED" -> "feet covered")."""
    return " ".join(word.lower() for word in _WORD.findall(text.replace("_", " ")))


_SUFFIXES = (("'s", ""), ("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""))


def _stem(word: str) -> str:
    """A crude English stem: enough for plurals and simple tenses ("buses" -> "bus", "walked" -> "walk")."""
    if word.endswith("ss"):
        return word
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + replacement
    return word


def _stems(text: str) -> str:
    return " ".join(_stem(word) for word in text.split())


@dataclass(frozen=True)
class Term:
    """Something found in the image: a detected class or a recognised word, with the items it comes from."""

    text: str  # as the model gave it
    source: str  # DETECTION or OCR
    items: tuple[int, ...]

    @property
    def key(self) -> str:
        """The normalised form that is compared."""
        return normalise(self.text)


@dataclass(frozen=True)
class Candidate:
    """A phrase of the request's text (one to three words) and its exact spelling there."""

    key: str
    text: str


@dataclass(frozen=True)
class Match:
    """A term the text mentions, with the phrase that mentions it and how similar they are, in [0, 1]."""

    term: Term
    matched_text: str
    score: float
    how: str = field(default="exact")  # exact | stem | fuzzy | embedding


def phrases(text: str, max_words: int = 3, limit: int = 96) -> list[Candidate]:
    """The text's phrases of 1..max_words words, without phrases made only of stop words, first `limit`."""
    words = list(_WORD.finditer(text.replace("_", " ")))
    seen: dict[str, Candidate] = {}
    for size in range(1, max_words + 1):
        for start in range(len(words) - size + 1):
            group = words[start : start + size]
            key = " ".join(w.group().lower() for w in group)
            if all(w.group().lower() in _STOPWORDS for w in group) or key in seen:
                continue
            seen[key] = Candidate(key=key, text=text[group[0].start() : group[-1].end()])
            if len(seen) >= limit:
                return list(seen.values())
    return list(seen.values())


def terms_from(class_names: Sequence[str], ocr_lines: Sequence[str], max_ocr_words: int = 64) -> list[Term]:
    """Detected classes (one term per class, with every detection index) and OCR words (two or more letters)."""
    detections: dict[str, list[int]] = {}
    for index, name in enumerate(class_names):
        if normalise(name):
            detections.setdefault(name, []).append(index)
    words: dict[str, tuple[str, list[int]]] = {}
    for index, line in enumerate(ocr_lines):
        for word in _WORD.findall(line):
            key = word.lower()
            if len(key) < 2 or key.isdigit() or key in _STOPWORDS:
                continue
            if key not in words:
                if len(words) >= max_ocr_words:
                    continue
                words[key] = (word, [])
            if index not in words[key][1]:
                words[key][1].append(index)
    return [Term(name, DETECTION, tuple(items)) for name, items in detections.items()] + [
        Term(word, OCR, tuple(items)) for word, items in words.values()
    ]


def _lexical(term: Term, candidate: Candidate) -> tuple[float, str]:
    if term.key == candidate.key:
        return 1.0, "exact"
    if _stems(term.key) == _stems(candidate.key):
        return STEM_SCORE, "stem"
    if term.source == OCR and len(term.key) >= 4 and len(candidate.key) >= 4 and " " not in candidate.key:
        ratio = difflib.SequenceMatcher(None, term.key, candidate.key).ratio()
        if ratio >= FUZZY_MIN:
            return min(ratio, STEM_SCORE - 0.01), "fuzzy"
    return 0.0, ""


def find_mentions(
    text: str,
    terms: Sequence[Term],
    embed: Callable[[list[str]], np.ndarray] | None = None,
    threshold: float = 0.7,
) -> list[Match]:
    """The terms the text mentions, best first: for each term its best phrase of the text.

    Lexical matches (exact 1.0, same stem 0.9, close spelling for OCR words) need no model. `embed`, when
    given, returns unit vectors for texts; the cosine of a term and a phrase then counts too (MiniLM puts
    "fall"/"fell" at 0.77, "bus"/"buses" at 0.88, but "fall"/"autumn" at 0.65 and "person"/"bus" at 0.22).
    """
    candidates = phrases(text)
    if not terms or not candidates:
        return []
    cosines: np.ndarray | None = None
    if embed is not None:
        keys = list(dict.fromkeys([t.key for t in terms] + [c.key for c in candidates]))
        vectors = embed(keys)
        index = {key: i for i, key in enumerate(keys)}
        term_vectors = vectors[[index[t.key] for t in terms]]
        candidate_vectors = vectors[[index[c.key] for c in candidates]]
        cosines = np.clip(term_vectors @ candidate_vectors.T, 0.0, 1.0)
    matches: list[Match] = []
    for i, term in enumerate(terms):
        best: Match | None = None
        for j, candidate in enumerate(candidates):
            score, how = _lexical(term, candidate)
            if cosines is not None and float(cosines[i, j]) > score:
                score, how = float(cosines[i, j]), "embedding"
            if score >= threshold and (best is None or score > best.score):
                best = Match(term, candidate.text, score, how)
        if best is not None:
            matches.append(best)
    return sorted(matches, key=lambda m: (-m.score, m.term.source, m.term.key))
