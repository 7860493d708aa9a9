"""Zero-shot classification by embedding similarity, with calibrated scores; and scores from classifier logits.

The choice (documented for callers): every candidate label is put into a prompt, by default
"This text is about {label}.", and embedded with the same model as the text. The score of a label
comes from the cosine similarity c between the text and its prompt:

- single-label (the default): softmax(c / T) over the labels, so the scores of a text add up to 1;
  T = 0.05 by default, so a cosine lead of 0.1 makes a label e^2 = 7.4 times as likely.
- multi-label: each label on its own, sigmoid((c - b) / T) with b = 0.15: with all-MiniLM-L6-v2 a
  text and the prompt of its own topic typically have a cosine of 0.2-0.35, of an unrelated topic
  below 0.1, so b sits between the two and a label scores 0.5 at c = b.

T, b and the template are per-model registry params (`zero_shot_temperature`, `zero_shot_threshold`,
`zero_shot_template`). Embedding similarity tells topics apart well (medical, legal, financial);
it does not understand sentiment or negation: use a fine-tuned classifier for those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from aisemble.hosting.settings import ModelSettings, setting

__all__ = ["ZeroShotSettings", "label_scores", "logit_scores", "ranked"]


def _has_label(template: str) -> str | None:
    return None if "{label}" in template else f"must contain '{{label}}' (got {template!r})"


@dataclass(frozen=True)
class ZeroShotSettings(ModelSettings):
    """How an embedding model classifies zero-shot: its params `zero_shot_template`, `zero_shot_temperature` and
    `zero_shot_threshold` (another `zero_shot_*` key is refused)."""

    namespace: ClassVar[str] = "zero_shot_"

    template: str = setting("This text is about {label}.", check=_has_label)
    temperature: float = setting(0.05, above=0)
    threshold: float = setting(0.15)

    def prompt(self, label: str) -> str:
        """The text embedded for a label."""
        return self.template.replace("{label}", label)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * values))  # overflow-free logistic


def label_scores(
    texts: np.ndarray, labels: np.ndarray, settings: ZeroShotSettings, multi_label: bool = False
) -> np.ndarray:
    """Scores [n_texts, n_labels] from text vectors [n_texts, dims] and label-prompt vectors [n_labels, dims]."""
    cosines = _unit(texts.astype(np.float64)) @ _unit(labels.astype(np.float64)).T
    if multi_label:
        return _sigmoid((cosines - settings.threshold) / settings.temperature)
    return _softmax(cosines / settings.temperature)


def logit_scores(logits: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """A classifier's scores: softmax over the labels, or one sigmoid per label for multi-label."""
    values = logits.astype(np.float64)
    return _sigmoid(values) if multi_label else _softmax(values)


def ranked(labels: Sequence[str], scores: np.ndarray) -> tuple[tuple[str, float], ...]:
    """(label, score) pairs, best first (ties keep the labels' order)."""
    order = np.argsort(-scores, kind="stable")
    return tuple((labels[i], float(scores[i])) for i in order)
