"""Domain types of the NLP service, shared by its runner and every NLP backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Classification", "Encoded", "LanguageGuess", "LanguageQuery"]


@dataclass(frozen=True)
class Encoded:
    """What an encoder backend returns for one text.

    values: an embedding model's pooled vector (not normalised) or a classifier's logits.
    token_count: tokens the model read, special tokens included (after truncation).
    truncated: True when the text was cut to the model's context window.
    """

    values: np.ndarray
    token_count: int
    truncated: bool


@dataclass(frozen=True)
class Classification:
    """The labels of one text with their scores, best first."""

    labels: tuple[tuple[str, float], ...]
    token_count: int
    truncated: bool


@dataclass(frozen=True)
class LanguageQuery:
    """One text whose language to detect, and how many candidates to report."""

    text: str
    top_k: int = 3


@dataclass(frozen=True)
class LanguageGuess:
    """The languages of one text, best first (ISO 639 codes; "und" when the text carries no language)."""

    languages: tuple[tuple[str, float], ...]
    token_count: int
    truncated: bool

    @property
    def best(self) -> tuple[str, float]:
        """The most likely language and its score."""
        return self.languages[0] if self.languages else ("und", 0.0)
