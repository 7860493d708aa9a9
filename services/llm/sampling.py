"""Next-token choice from logits: greedy, or temperature / top-k / top-p with a per-request seeded generator."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from services.llm.types import SamplingParams

__all__ = ["Sampler"]

_NUCLEUS_THRESHOLDS = (1e-3, 1e-6, 1e-12)  # relative to the largest weight, which is 1
_BLOCK = 256


def _inverse_cdf(weights: np.ndarray, u: float) -> int:
    """The index where the cumulative weight passes u * total, found in two levels (sums of blocks of
    256, then inside one block): the same index as one cumulative sum over the whole vocabulary,
    several times cheaper."""
    size = weights.size
    padded = np.concatenate([weights, np.zeros(-size % _BLOCK, weights.dtype)]) if size % _BLOCK else weights
    cumulative = np.cumsum(padded.reshape(-1, _BLOCK).sum(axis=1, dtype=np.float64))
    target = u * cumulative[-1]
    block = min(int(np.searchsorted(cumulative, target, side="right")), cumulative.size - 1)
    inside = padded[block * _BLOCK : (block + 1) * _BLOCK]
    before = cumulative[block - 1] if block else 0.0
    offset = int(np.searchsorted(np.cumsum(inside, dtype=np.float64), target - before, side="right"))
    if offset >= _BLOCK or inside[offset] == 0:  # rounding at the block's end: its last token with weight
        offset = int(np.flatnonzero(inside)[-1])
    return block * _BLOCK + offset


class Sampler:
    """Picks the tokens of one sequence. The same seed and logits give the same tokens, on any backend.

    Until `min_output_tokens` tokens have been chosen, the end-of-sequence tokens cannot be.
    The arithmetic runs in float32 over the vocabulary with float64 sums: about 0.1-0.6 ms a
    token, which matters when a batch of sequences samples between two decoding steps.
    """

    def __init__(self, params: SamplingParams, eos_token_ids: Iterable[int] = ()) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)
        self._eos = np.fromiter(sorted(eos_token_ids), dtype=np.int64)
        self._chosen = 0

    def __call__(self, logits: np.ndarray) -> tuple[int, float]:
        """Return (token id, log-probability of that token under the model's unscaled distribution)."""
        logits = np.asarray(logits, dtype=np.float32).reshape(-1)
        if self._chosen < self.params.min_output_tokens and self._eos.size:
            without_eos = logits.copy()
            without_eos[self._eos[self._eos < logits.size]] = -np.inf
            if np.isfinite(without_eos).any():  # an output format may allow nothing but the end of sequence
                logits = without_eos
        self._chosen += 1
        shifted = logits - logits.max()
        log_total = float(np.log(np.exp(shifted).sum(dtype=np.float64)))
        params = self.params
        if params.temperature == 0.0:
            token = int(np.argmax(shifted))
            return token, float(shifted[token]) - log_total
        scaled = shifted / np.float32(params.temperature)
        weights = np.exp(scaled)  # the largest is exp(0) = 1
        size = scaled.size
        if 0 < params.top_k < size:
            candidates = np.argpartition(-scaled, params.top_k - 1)[: params.top_k]
            order = candidates[np.argsort(-scaled[candidates], kind="stable")]
            probs = weights[order] / weights[order].sum(dtype=np.float64)
        elif params.top_p >= 1.0:
            # The whole distribution: inverse CDF over the vocabulary in its own order, no sort.
            token = _inverse_cdf(weights, self._rng.random())
            return token, float(shifted[token]) - log_total
        else:
            # Sorting all 49k logits every token is costly. The tokens above a weight threshold are a prefix
            # of the sorted order; when they carry top_p of the mass they hold the whole nucleus, so sorting
            # just them is exact. Lower the threshold until they do (the full sort is the last resort).
            total = weights.sum(dtype=np.float64)
            for threshold in _NUCLEUS_THRESHOLDS:
                candidates = np.flatnonzero(weights >= threshold)
                if weights[candidates].sum(dtype=np.float64) >= params.top_p * total:
                    break
            else:
                candidates = np.arange(size)
            order = candidates[np.argsort(-scaled[candidates], kind="stable")]
            probs = weights[order] / total
        if params.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
            order, probs = order[:keep], probs[:keep]
        cumulative = np.cumsum(probs)
        index = int(np.searchsorted(cumulative, self._rng.random() * cumulative[-1], side="right"))
        token = int(order[min(index, len(order) - 1)])
        return token, float(shifted[token]) - log_total
