"""Domain types of the NLP service: what backends take and give, and the request of each call."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aisemble.errors import Code

__all__ = [
    "Classification",
    "ClassifyCall",
    "DetectLanguageCall",
    "EmbedCall",
    "Encoded",
    "ItemFailure",
    "LanguageGuess",
    "LanguageQuery",
    "StreamClassifyCall",
    "StreamEmbedCall",
    "TextItem",
]


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


# --- one call of the service: the runner's input, validated (its answer: answers.py) ---


@dataclass(frozen=True)
class EmbedCall:
    """Embed: the model (a registry name or 'auto'), the texts, and whether to scale each vector to unit length."""

    model: str
    texts: tuple[str, ...]
    normalize: bool = True


@dataclass(frozen=True)
class ClassifyCall:
    """Classify: a classifier over its own labels, or an embedding model zero-shot over candidate_labels."""

    model: str
    texts: tuple[str, ...]
    candidate_labels: tuple[str, ...] = ()
    multi_label: bool = False


@dataclass(frozen=True)
class DetectLanguageCall:
    """DetectLanguage: the model ('auto' for the default) and how many languages to report per text."""

    model: str
    texts: tuple[str, ...]
    top_k: int = 3


# --- bulk streams (StreamEmbed, StreamClassify): the settings of a stream, and its items ---


@dataclass(frozen=True)
class TextItem:
    """A text of a bulk stream with the caller's id for it."""

    id: str
    text: str


@dataclass(frozen=True)
class ItemFailure:
    """Why one text of a bulk stream was not processed (the stream goes on)."""

    code: Code
    reason: str
    message: str


@dataclass(frozen=True)
class StreamEmbedCall:
    """StreamEmbed's stream settings (from its first message): the model, normalize, texts held at once."""

    model: str
    normalize: bool
    max_inflight_texts: int


@dataclass(frozen=True)
class StreamClassifyCall:
    """StreamClassify's stream settings: as ClassifyCall without texts, and the texts held at once."""

    model: str
    candidate_labels: tuple[str, ...]
    multi_label: bool
    max_inflight_texts: int
