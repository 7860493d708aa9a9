"""The sampler: greedy is argmax, a seed reproduces, top-k/top-p restrict the choice."""

import numpy as np

from services.llm.sampling import Sampler
from services.llm.types import SamplingParams


def _logits():
    return np.log(np.array([0.05, 0.6, 0.3, 0.05]))


def test_greedy_is_argmax_with_its_logprob():
    token, logprob = Sampler(SamplingParams(max_output_tokens=1, temperature=0.0))(_logits())
    assert token == 1 and abs(logprob - np.log(0.6)) < 1e-9


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
