"""Next-token choice from logits: greedy, or temperature / top-k / top-p with a per-request seeded generator."""

from __future__ import annotations

import numpy as np

from services.llm.types import SamplingParams

__all__ = ["Sampler"]


class Sampler:
    """Picks tokens for one sequence. The same seed and logits give the same tokens, on any backend."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> tuple[int, float]:
        """Return (token id, log-probability of that token under the model's unscaled distribution)."""
        logits = np.asarray(logits, dtype=np.float64).reshape(-1)
        shifted = logits - logits.max()
        log_probs = shifted - np.log(np.exp(shifted).sum())
        params = self.params
        if params.temperature == 0.0:
            token = int(np.argmax(logits))
            return token, float(log_probs[token])
        scaled = shifted / params.temperature
        candidates = np.arange(scaled.size)
        if 0 < params.top_k < scaled.size:
            candidates = np.argpartition(-scaled, params.top_k - 1)[: params.top_k]
        order = candidates[np.argsort(-scaled[candidates], kind="stable")]
        probs = np.exp(scaled[order] - scaled[order[0]])
        probs /= probs.sum()
        if params.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
            order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
        token = int(
            order[
                np.searchsorted(np.cumsum(probs), self._rng.random() * probs.sum(), side="right").clip(
                    max=len(order) - 1
                )
            ]
        )
        return token, float(log_probs[token])
