"""Mention matching of the multimodal service on its own (word rules; the embedding path runs in the service tests)."""

from __future__ import annotations

import numpy as np

from services.multimodal.matching import DETECTION, OCR, find_mentions, normalise, phrases, terms_from


def test_normalise_and_phrases():
    assert normalise("FEET_COVERED") == "feet covered"
    keys = [c.key for c in phrases("The Bus, the driver and a sign.")]
    assert "bus" in keys and "the bus" in keys and "bus the driver" in keys
    assert "the" not in keys and "a" not in keys  # stop words alone are no phrase
    assert next(c for c in phrases("The Bus, the driver") if c.key == "the bus").text == "The Bus"


def test_terms_group_items():
    terms = terms_from(["Normal", "Fall", "Normal"], ["OPEN 24h", "open late", "7"])
    by_key = {(t.source, t.key): t for t in terms}
    assert by_key[(DETECTION, "normal")].items == (0, 2)
    assert by_key[(OCR, "open")].items == (0, 1) and by_key[(OCR, "open")].text == "OPEN"
    assert (OCR, "7") not in by_key  # lone digits and one-letter words are not terms


def test_exact_stem_and_fuzzy_matches():
    terms = terms_from(["FEET_COVERED", "bus"], ["EMISSIONS", "Tickets"])
    found = {m.term.key: m for m in find_mentions("Covered feet? No: feet covered, two buses, emisions, ticket", terms)}
    assert found["feet covered"].score == 1.0 and found["feet covered"].matched_text == "feet covered"
    assert found["bus"].score == 0.9 and found["bus"].how == "stem" and found["bus"].matched_text == "buses"
    assert found["emissions"].how == "fuzzy" and 0.8 <= found["emissions"].score < 0.9  # an OCR-style misspelling
    assert found["tickets"].how == "stem"


def test_nothing_below_the_threshold():
    terms = terms_from(["Fall"], ["HELLO"])
    assert find_mentions("a quiet street", terms) == []
    assert find_mentions("", terms) == [] and find_mentions("hello", []) == []


def test_embeddings_add_matches_by_meaning():
    vectors = {"fall": [1.0, 0.0], "fell": [0.8, 0.6], "man": [0.0, 1.0], "man fell": [0.6, 0.8]}

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray([vectors.get(t, [0.0, 0.0]) for t in texts])

    terms = terms_from(["Fall"], [])
    assert find_mentions("man fell", terms) == []
    (match,) = find_mentions("man fell", terms, embed)
    assert match.matched_text == "fell" and match.how == "embedding" and match.score == 0.8
