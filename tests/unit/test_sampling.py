"""The sampler: greedy is argmax, a seed reproduces, top-k/top-p restrict the choice."""

import numpy as np

from services.llm.sampling import Sampler
from services.llm.types import SamplingParams


def _logits():
    return np.log(np.array([0.05, 0.6, 0.3, 0.05]))


def test_greedy_is_argmax_with_its_logprob():
    token, logprob = Sampler(SamplingParams(max_output_tokens=1, temperature=0.0))(_logits())
    assert token == 1 and abs(logprob - np.log(0.6)) < 1e-6  # float32 arithmetic


def test_seed_reproduces_and_different_seeds_differ():
    def draw(seed):
        sampler = Sampler(SamplingParams(max_output_tokens=1, temperature=1.0, seed=seed))
        return [sampler(_logits())[0] for _ in range(50)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_top_k_one_is_greedy_and_top_p_keeps_the_nucleus():
    sampler = Sampler(SamplingParams(max_output_tokens=1, temperature=1.5, top_k=1, seed=1))
    assert {sampler(_logits())[0] for _ in range(30)} == {1}
    sampler = Sampler(SamplingParams(max_output_tokens=1, temperature=1.0, top_p=0.85, seed=1))
    assert {sampler(_logits())[0] for _ in range(200)} == {1, 2}


def test_frequencies_follow_the_distribution_over_a_large_vocabulary():
    # 49,152 tokens like SmolLM2's: the two-level inverse CDF must sample each token in proportion.
    logits = np.full(49152, -30.0)
    logits[[3, 20000, 49151]] = np.log([0.2, 0.5, 0.3])
    sampler = Sampler(SamplingParams(max_output_tokens=1, temperature=1.0, seed=3))
    counts = np.bincount([sampler(logits)[0] for _ in range(4000)], minlength=49152)
    assert counts.sum() == counts[[3, 20000, 49151]].sum()
    assert np.allclose(counts[[3, 20000, 49151]] / 4000, [0.2, 0.5, 0.3], atol=0.03)


def test_nucleus_matches_a_full_sort_on_flat_and_peaked_logits():
    rng = np.random.default_rng(0)
    for scale in (0.5, 3.0, 12.0):
        logits = rng.standard_normal(5000) * scale
        params = SamplingParams(max_output_tokens=1, temperature=1.0, top_p=0.9)
        order = np.argsort(-logits, kind="stable")
        probs = np.exp(logits[order] - logits.max())
        probs /= probs.sum()
        nucleus = set(order[: int(np.searchsorted(np.cumsum(probs), 0.9) + 1)].tolist())
        sampler = Sampler(params)
        drawn = {sampler(logits)[0] for _ in range(300)}
        assert drawn <= nucleus


def test_end_of_sequence_is_banned_until_min_output_tokens():
    logits = np.log(np.array([0.7, 0.2, 0.1]))  # token 0 is end-of-sequence and the most likely
    sampler = Sampler(SamplingParams(max_output_tokens=5, temperature=0.0, min_output_tokens=2), eos_token_ids={0})
    assert [sampler(logits)[0] for _ in range(3)] == [1, 1, 0]
