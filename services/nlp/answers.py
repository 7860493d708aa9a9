"""What each call of the NLP service answers: its result and the model that served it (`Resolved`)."""

from __future__ import annotations

from dataclasses import dataclass

from aisemble.resolution import Resolved
from services.nlp.types import Classification, Encoded, ItemFailure, LanguageGuess

__all__ = ["BulkAnswer", "ClassifyAnswer", "DetectLanguageAnswer", "EmbedAnswer"]


@dataclass(frozen=True)
class EmbedAnswer:
    """One vector per text, and the model that made them."""

    resolved: Resolved
    embeddings: tuple[Encoded, ...]

    @property
    def dimensions(self) -> int:
        """The length of each vector (0 without texts)."""
        return int(self.embeddings[0].values.shape[-1]) if self.embeddings else 0


@dataclass(frozen=True)
class ClassifyAnswer:
    """The labels of each text, and the model that chose them."""

    resolved: Resolved
    results: tuple[Classification, ...]


@dataclass(frozen=True)
class DetectLanguageAnswer:
    """The languages of each text (at most top_k, fewer when the model knows fewer), and the model."""

    resolved: Resolved
    guesses: tuple[LanguageGuess, ...]


@dataclass(frozen=True)
class BulkAnswer:
    """The outcome of each text of one batch of a bulk stream, in the batch's order, and the model."""

    resolved: Resolved
    ids: tuple[str, ...]
    outcomes: tuple[Encoded | Classification | ItemFailure, ...]

    @property
    def dimensions(self) -> int:
        """The length of the vectors (embeddings; 0 when none was made)."""
        for outcome in self.outcomes:
            if isinstance(outcome, Encoded):
                return int(outcome.values.shape[-1])
        return 0
