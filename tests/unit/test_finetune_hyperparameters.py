"""Hyper-parameters: defaults per task, validated ranges, fields of the other task refused."""

from __future__ import annotations

import pytest

from aisemble.errors import InvalidArgumentError
from services.finetune.hyperparameters import DEFAULTS, resolve_hyperparameters
from services.finetune.types import Task


def test_defaults_fill_what_the_request_leaves_unset():
    lora = resolve_hyperparameters(Task.CAUSAL_LM, {"epochs": 3}, context_window=8192)
    assert lora == DEFAULTS[Task.CAUSAL_LM].__class__(**{**DEFAULTS[Task.CAUSAL_LM].to_dict(), "epochs": 3})
    assert (lora.lora_rank, lora.lora_alpha, lora.unfrozen_layers) == (8, 16.0, None)
    classifier = resolve_hyperparameters(Task.TEXT_CLASSIFICATION, {}, context_window=256, encoder_layers=6)
    assert (classifier.unfrozen_layers, classifier.lora_rank, classifier.max_length) == (1, None, 128)


def test_a_default_max_length_beyond_the_window_is_cut_to_it_but_a_requested_one_is_refused():
    assert resolve_hyperparameters(Task.CAUSAL_LM, {}, context_window=64).max_length == 64
    with pytest.raises(InvalidArgumentError) as caught:
        resolve_hyperparameters(Task.CAUSAL_LM, {"max_length": 65}, context_window=64)
    assert caught.value.field_violations[0].field == "hyperparameters.max_length"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", 0.0),
        ("learning_rate", 10.0),
        ("learning_rate", float("nan")),
        ("epochs", 0),
        ("epochs", 10_000),
        ("batch_size", 0),
        ("batch_size", 257),
        ("max_length", 4),
        ("lora_rank", 0),
        ("lora_alpha", 0.0),
    ],
)
def test_values_out_of_range_are_refused(field, value):
    with pytest.raises(InvalidArgumentError) as caught:
        resolve_hyperparameters(Task.CAUSAL_LM, {field: value}, context_window=8192)
    assert [v.field for v in caught.value.field_violations] == [f"hyperparameters.{field}"]
    assert caught.value.reason == "INVALID_HYPERPARAMETERS"


def test_every_problem_is_reported_at_once_with_fields_of_the_other_task():
    with pytest.raises(InvalidArgumentError) as caught:
        resolve_hyperparameters(
            Task.TEXT_CLASSIFICATION,
            {"epochs": 0, "lora_rank": 4, "unfrozen_layers": 7},
            context_window=256,
            encoder_layers=6,
        )
    problems = {v.field: v.description for v in caught.value.field_violations}
    assert set(problems) == {"hyperparameters.epochs", "hyperparameters.lora_rank", "hyperparameters.unfrozen_layers"}
    assert problems["hyperparameters.lora_rank"] == "applies to CAUSAL_LM jobs only, not TEXT_CLASSIFICATION"
    assert "[0, 6]" in problems["hyperparameters.unfrozen_layers"]


def test_the_edges_of_the_ranges_are_accepted():
    settings = resolve_hyperparameters(
        Task.CAUSAL_LM,
        {"learning_rate": 0.5, "epochs": 100, "batch_size": 1, "max_length": 8, "seed": 2**64 - 1},
        context_window=8192,
    )
    assert (settings.learning_rate, settings.epochs, settings.batch_size, settings.seed) == (0.5, 100, 1, 2**64 - 1)
