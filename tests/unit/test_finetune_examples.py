"""Training examples: every JSON line checked (errors name the line), inline checks, checksum, split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from aisemble.errors import InvalidArgumentError
from services.finetune.examples import (
    ExampleLimits,
    checked_examples,
    examples_sha256,
    parse_jsonl,
    read_examples,
    split_examples,
    write_examples,
)
from services.finetune.types import ClassificationExample, CompletionExample, Task

DATASET = Path(__file__).resolve().parents[2] / "data" / "domain_classification.jsonl"


def _jsonl(*records: object) -> bytes:
    return b"\n".join(r if isinstance(r, bytes) else json.dumps(r).encode() for r in records)


def test_a_good_file_parses_skipping_blank_lines_and_extra_keys():
    data = _jsonl(
        {"text": "a fever", "label": "medical", "lang": "en"}, b"", b"  ", {"text": "a court", "label": "legal"}
    )
    assert parse_jsonl(data + b"\n", Task.TEXT_CLASSIFICATION) == [
        ClassificationExample("a fever", "medical"),
        ClassificationExample("a court", "legal"),
    ]


def test_each_bad_line_is_named():
    data = _jsonl(
        {"prompt": "p", "response": "r"},
        b"{not json",
        {"prompt": "p"},
        ["a", "list"],
        {"prompt": "p", "response": 7},
        {"prompt": " ", "response": "r"},
        b"\xff\xfe",
    )
    with pytest.raises(InvalidArgumentError) as caught:
        parse_jsonl(data, Task.CAUSAL_LM)
    assert [v.description for v in caught.value.field_violations] == [
        "line 2: is not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        "line 3: 'response' is required",
        "line 4: must be a JSON object with 'prompt' and 'response'",
        "line 5: 'response' must be a string (got int)",
        "line 6: 'prompt' is empty",
        "line 7: is not valid UTF-8",
    ]
    assert caught.value.reason == "INVALID_TRAINING_FILE"


def test_at_most_max_reported_problems_are_listed_with_a_count_of_the_rest():
    data = _jsonl(*[{"text": "x"}] * 15)
    with pytest.raises(InvalidArgumentError) as caught:
        parse_jsonl(data, Task.TEXT_CLASSIFICATION, ExampleLimits(max_reported=3))
    assert len(caught.value.field_violations) == 3 and caught.value.message.endswith("and 12 more")


def test_set_level_checks():
    with pytest.raises(InvalidArgumentError, match="no examples"):
        parse_jsonl(b"\n\n", Task.CAUSAL_LM)
    with pytest.raises(InvalidArgumentError, match="at least 2 labels") as caught:
        parse_jsonl(_jsonl({"text": "a", "label": "x"}, {"text": "b", "label": "x "}), Task.TEXT_CLASSIFICATION)
    assert caught.value.reason == "ONE_LABEL"
    with pytest.raises(InvalidArgumentError, match="at most 2"):
        checked_examples(
            Task.CAUSAL_LM, [{"prompt": "p", "response": "r"}] * 3, "examples", ExampleLimits(max_examples=2)
        )
    with pytest.raises(InvalidArgumentError, match="limit is 5") as caught:
        checked_examples(
            Task.CAUSAL_LM, [{"prompt": "p" * 6, "response": "r"}], "examples", ExampleLimits(max_field_chars=5)
        )
    assert caught.value.field_violations[0].field == "examples[0]"


def test_the_checksum_is_that_of_the_canonical_file(tmp_path):
    examples = [CompletionExample("Hi", "Hello"), CompletionExample("日本語", "はい")]
    write_examples(tmp_path / "a.jsonl", examples)
    import hashlib

    assert examples_sha256(examples) == hashlib.sha256((tmp_path / "a.jsonl").read_bytes()).hexdigest()
    assert read_examples(tmp_path / "a.jsonl", Task.CAUSAL_LM) == examples


def test_the_split_is_seeded_and_stratified():
    examples = parse_jsonl(DATASET.read_bytes(), Task.TEXT_CLASSIFICATION)
    train, validation = split_examples(examples, 0.1, seed=0)
    assert (len(train), len(validation)) == (1026, 112)
    per_label = Counter(e.label for e in examples)
    assert Counter(e.label for e in validation) == Counter({label: n // 10 for label, n in per_label.items()})
    assert sorted(map(repr, train + validation)) == sorted(map(repr, examples))
    assert split_examples(examples, 0.1, seed=0) == (train, validation)
    assert split_examples(examples, 0.1, seed=1) != (train, validation)
    # A label with one example stays in training; a split of 0 holds out nothing.
    few = [ClassificationExample(text, label) for text, label in (("a", "x"), ("b", "y"), ("c", "y"), ("d", "y"))]
    train, validation = split_examples(few, 0.4, 0)
    assert [e.label for e in validation] == ["y"] and sorted(e.label for e in train) == ["x", "y", "y"]
    assert split_examples(few, 0.0, 0)[1] == []


def test_the_shipped_dataset_is_balanced_and_bilingual():
    rows = [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]
    labels = Counter(r["label"] for r in rows)
    assert set(labels) == {"medical", "legal", "financial", "code", "creative", "general"}
    assert max(labels.values()) - min(labels.values()) <= 1  # 190 each, 189 where a text was too near a held-out one
    assert Counter(r["lang"] for r in rows) == Counter({"en": 240, "ja": 898})
    assert len({r["text"] for r in rows}) == len(rows)
