"""Incremental detokenisation on the real SmolLM2 tokenizer: UTF-8 safe, and equal to a full decode."""

import pytest

from services.llm.detokenizer import IncrementalDetokenizer

TEXTS = [
    "The capital of France is Paris.",
    "日本語のテキスト、そして中文。",
    "café, naïve, Ελληνικά, emoji 🙂🚀 and \u00a0spaces  twice",
]


@pytest.fixture(scope="module")
def tokenizer(store):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(store.require("smollm2-135m-instruct"))


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_never_break_a_character_and_join_to_the_text(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detokenizer = IncrementalDetokenizer(tokenizer)
    deltas = [detokenizer.push(token) for token in ids]
    deltas.append(detokenizer.flush())
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == tokenizer.decode(ids) == text


def test_a_split_character_is_held_back_until_complete(tokenizer):
    ids = tokenizer("🙂", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1, "the emoji should take several byte-level tokens"
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert [detokenizer.push(t) for t in ids[:-1]] == [""] * (len(ids) - 1)
    assert detokenizer.push(ids[-1]) == "🙂"
