"""Training examples: checking them (inline or JSON Lines, every line), their checksum, and the validation split.

A JSON Lines file holds one object per line: {"prompt", "response"} for CAUSAL_LM, {"text", "label"}
for TEXT_CLASSIFICATION. Other keys (an id, a language tag) are ignored; blank lines are skipped.
Every problem names its line (or its request field) and at most `max_reported` are listed.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aisemble.config.state import write_atomically
from aisemble.errors import FieldViolation, InvalidArgumentError
from services.finetune.types import ClassificationExample, CompletionExample, Task

__all__ = [
    "Example",
    "ExampleLimits",
    "checked_examples",
    "examples_sha256",
    "parse_jsonl",
    "read_examples",
    "split_examples",
    "write_examples",
]

Example = CompletionExample | ClassificationExample
_FIELDS = {Task.CAUSAL_LM: ("prompt", "response"), Task.TEXT_CLASSIFICATION: ("text", "label")}


@dataclass(frozen=True)
class ExampleLimits:
    """What one job's examples may hold."""

    max_examples: int = 50_000
    max_field_chars: int = 20_000
    max_label_chars: int = 100
    max_labels: int = 1_000
    max_reported: int = 10


def _problem(record: Any, task: Task, limits: ExampleLimits) -> str | None:
    """Why one record is not a valid example of the task, or None."""
    if not isinstance(record, Mapping):
        return f"must be a JSON object with {' and '.join(repr(f) for f in _FIELDS[task])}"
    for name in _FIELDS[task]:
        value = record.get(name)
        if value is None:
            return f"'{name}' is required"
        if not isinstance(value, str):
            return f"'{name}' must be a string (got {type(value).__name__})"
        if not value.strip():
            return f"'{name}' is empty"
        limit = limits.max_label_chars if name == "label" else limits.max_field_chars
        if len(value) > limit:
            return f"'{name}' is {len(value)} characters long; the limit is {limit}"
    return None


def _build(record: Mapping[str, Any], task: Task) -> Example:
    if task == Task.CAUSAL_LM:
        return CompletionExample(prompt=record["prompt"], response=record["response"])
    return ClassificationExample(text=record["text"], label=record["label"].strip())


def _raise(violations: list[FieldViolation], total: int, what: str, reason: str) -> None:
    more = f"; and {total - len(violations)} more" if total > len(violations) else ""
    message = "; ".join(f"{v.field}: {v.description}" for v in violations)
    raise InvalidArgumentError(f"{what}: {message}{more}", field_violations=violations, reason=reason)


def checked_examples(
    task: Task, records: Sequence[Any], field: str, limits: ExampleLimits | None = None
) -> list[Example]:
    """Validate records (dicts) as examples of the task; errors name `field[i]` (e.g. a request field)."""
    limits = limits or ExampleLimits()
    violations: list[FieldViolation] = []
    bad = 0
    examples: list[Example] = []
    for index, record in enumerate(records):
        problem = _problem(record, task, limits)
        if problem is not None:
            bad += 1
            if len(violations) < limits.max_reported:
                violations.append(FieldViolation(f"{field}[{index}]", problem))
            continue
        examples.append(_build(record, task))
    if violations:
        _raise(violations, bad, "invalid training examples", "INVALID_EXAMPLES")
    _check_set(task, examples, field, limits)
    return examples


def _check_set(task: Task, examples: Sequence[Example], field: str, limits: ExampleLimits) -> None:
    if not examples:
        raise InvalidArgumentError.for_field(field, "has no examples: give at least one", reason="NO_EXAMPLES")
    if len(examples) > limits.max_examples:
        raise InvalidArgumentError.for_field(
            field, f"has {len(examples)} examples; at most {limits.max_examples} per job", reason="TOO_MANY_EXAMPLES"
        )
    if task != Task.TEXT_CLASSIFICATION:
        return
    labels = {e.label for e in examples if isinstance(e, ClassificationExample)}
    if len(labels) < 2:
        raise InvalidArgumentError.for_field(
            field,
            f"every example has the label {next(iter(labels))!r}: a classifier needs at least 2 labels",
            reason="ONE_LABEL",
        )
    if len(labels) > limits.max_labels:
        raise InvalidArgumentError.for_field(
            field, f"has {len(labels)} labels; at most {limits.max_labels}", reason="TOO_MANY_LABELS"
        )


def parse_jsonl(data: bytes, task: Task, limits: ExampleLimits | None = None, field: str = "chunk") -> list[Example]:
    """Parse and check a JSON Lines file; each error names its line (1-based)."""
    limits = limits or ExampleLimits()
    violations: list[FieldViolation] = []
    bad = 0
    examples: list[Example] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        record: Any = None
        try:
            record = json.loads(raw.decode("utf-8"))
            problem = _problem(record, task, limits)
        except UnicodeDecodeError:
            problem = "is not valid UTF-8"
        except json.JSONDecodeError as exc:
            problem = f"is not valid JSON ({exc.msg} at column {exc.colno})"
        if problem is None:
            examples.append(_build(record, task))
            continue
        bad += 1
        if len(violations) < limits.max_reported:
            violations.append(FieldViolation(field, f"line {number}: {problem}"))
    if violations:
        _raise(violations, bad, "invalid training file", "INVALID_TRAINING_FILE")
    _check_set(task, examples, "file", limits)
    return examples


def _line(example: Example) -> str:
    if isinstance(example, CompletionExample):
        record = {"prompt": example.prompt, "response": example.response}
    else:
        record = {"text": example.text, "label": example.label}
    return json.dumps(record, ensure_ascii=False)


def examples_sha256(examples: Iterable[Example]) -> str:
    """SHA-256 of the examples as canonical JSON Lines (what write_examples writes)."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(_line(example).encode("utf-8") + b"\n")
    return digest.hexdigest()


def split_examples(
    examples: Sequence[Example], validation_split: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Shuffle (seeded) and hold out floor(n * split) examples; per label for classification (stratified).

    A label with a single example stays in training, so every label is trained on.
    """
    rng = random.Random(seed)
    if examples and isinstance(examples[0], ClassificationExample):
        groups: dict[str, list[Example]] = defaultdict(list)
        for example in examples:
            groups[example.label].append(example)  # type: ignore[union-attr]
        train: list[Example] = []
        validation: list[Example] = []
        for label in sorted(groups):
            members = groups[label]
            rng.shuffle(members)
            held = min(int(len(members) * validation_split), len(members) - 1)
            validation += members[:held]
            train += members[held:]
        rng.shuffle(train)
        rng.shuffle(validation)
        return train, validation
    shuffled = list(examples)
    rng.shuffle(shuffled)
    held = min(int(len(shuffled) * validation_split), len(shuffled) - 1)
    return shuffled[held:], shuffled[:held]


def write_examples(path: Path, examples: Iterable[Example]) -> None:
    """Write examples as canonical JSON Lines (atomically, fsynced: a job is recorded only after its examples)."""
    write_atomically(path, "".join(_line(e) + "\n" for e in examples))


def read_examples(path: Path, task: Task) -> list[Example]:
    """Read what write_examples wrote."""
    return [_build(json.loads(line), task) for line in path.read_text(encoding="utf-8").splitlines() if line]
