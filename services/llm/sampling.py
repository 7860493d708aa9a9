"""Next-token choice from logits: greedy, or temperature / top-k / top-p with a per-request seeded generator."""

from __future__ import annotations

import numpy as np

from services.llm.types import SamplingParams

__all__ = ["Sampler"]

_PARTIAL = 512


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
        weights = np.exp(scaled - scaled.max())
        size = scaled.size
        if 0 < params.top_k < size:
            candidates = np.argpartition(-scaled, params.top_k - 1)[: params.top_k]
            order = candidates[np.argsort(-scaled[candidates], kind="stable")]
            probs = weights[order] / weights[order].sum()
        elif params.top_p >= 1.0:
            order, probs = np.arange(size), weights / weights.sum()  # the whole distribution: no sort needed
        else:
            # Sorting all 49k logits every token is costly: sort the best few hundred, which almost always
            # hold the nucleus, and fall back to the full sort when they do not (the result is exact).
            total = weights.sum()
            candidates = np.argpartition(-scaled, _PARTIAL - 1)[:_PARTIAL] if size > _PARTIAL else np.arange(size)
            order = candidates[np.argsort(-scaled[candidates], kind="stable")]
            probs = weights[order] / total
            if probs.sum() < params.top_p:
                order = np.argsort(-scaled, kind="stable")
                probs = weights[order] / total
        if params.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
            order, probs = order[:keep], probs[:keep]
        probs = probs / probs.sum()
        index = int(np.searchsorted(np.cumsum(probs), self._rng.random(), side="right"))
        token = int(order[min(index, len(order) - 1)])
        return token, float(log_probs[token])
