"""Per-model settings: typed, bounded, read once from a registry entry's params, refused in one error style."""

from __future__ import annotations

import dataclasses

import pytest

from aisemble.config.models import ModelSpec
from aisemble.config.schema import ConfigError
from aisemble.errors import FailedPreconditionError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.batching import BatchingConfig
from aisemble.hosting.host import ModelHost
from aisemble.hosting.settings import ModelSettings, setting, settings_error, unservable
from services.llm.metrics import LlmCollector
from services.nlp.runner import BatchingSettings, NlpLimits, NlpRunner
from services.nlp.zero_shot import ZeroShotSettings


def _spec(task: str = "embedding", **params) -> ModelSpec:
    return ModelSpec(name="tiny", task=task, provider="onnxruntime", service="nlp", params=params)


@dataclasses.dataclass(frozen=True)
class _Example(ModelSettings):
    count: int = setting(2, minimum=1, maximum=8)
    ratio: float = setting(0.5, above=0)
    label: str = setting("x")
    limit: int | None = setting(None, minimum=0)

    def problems(self) -> list[tuple[str, str]]:
        if self.limit is not None and self.limit < self.count:
            return [("limit", f"must be >= count ({self.count})")]
        return []


def test_defaults_values_and_none_for_an_optional_key():
    assert _Example.from_params({}, model="m") == _Example()
    parsed = _Example.from_params({"count": 3, "ratio": 2, "limit": None, "other": "left alone"}, model="m")
    assert parsed == _Example(count=3, ratio=2.0, limit=None) and isinstance(parsed.ratio, float)


def test_every_violation_is_named_at_once_then_checks_across_fields():
    with pytest.raises(ConfigError) as caught:
        _Example.from_params({"count": 9, "ratio": 0, "label": 1, "limit": True}, model="m", source="models.yaml")
    error = caught.value
    assert [v.field for v in error.field_violations] == ["params.count", "params.ratio", "params.label", "params.limit"]
    assert error.metadata["model"] == "m" and error.metadata["file"] == "models.yaml"
    assert str(error) == (
        "models.yaml: model 'm': params.count: must be an integer between 1 and 8 (got 9); "
        "params.ratio: must be a number > 0 (got 0); params.label: must be a string (got 1); "
        "params.limit: must be an integer >= 0 (got True)"
    )
    with pytest.raises(ConfigError, match=r"params\.limit: must be >= count \(3\)"):
        _Example.from_params({"count": 3, "limit": 1}, model="m")


@dataclasses.dataclass(frozen=True)
class _Lists(ModelSettings):
    names: tuple[str, ...] | None = setting(None, min_items=1)
    mean: tuple[float, ...] = setting((0.5, 0.5, 0.5), min_items=3, max_items=3)
    std: tuple[float, ...] = setting((1.0, 1.0, 1.0), above=0, min_items=3, max_items=3)
    sizes: tuple[str, ...] = setting((), max_items=2, choices=("256x256", "512x512", "1024x1024"))
    side: int | tuple[int, ...] | None = setting(None, minimum=1, min_items=2, max_items=2)
    api: str = setting("completions", choices=("completions", "chat"))


def test_lists_are_tuples_checked_item_by_item():
    assert _Lists.from_params({}, model="m") == _Lists()
    parsed = _Lists.from_params(
        {"names": ["cat", "dog"], "mean": [0, 0.25, 1], "sizes": ("256x256",), "side": [480, 640], "api": "chat"},
        model="m",
    )
    assert parsed == _Lists(
        names=("cat", "dog"), mean=(0.0, 0.25, 1.0), sizes=("256x256",), side=(480, 640), api="chat"
    )
    assert isinstance(parsed.names, tuple) and all(isinstance(v, float) for v in parsed.mean)
    assert _Lists.from_params({"side": 320, "names": None}, model="m").side == 320  # either form of a union


def test_a_bad_list_names_its_key_and_what_each_item_must_be():
    params = {
        "names": [],
        "mean": [0.5, 0.5],
        "std": [1, 0, 1],
        "sizes": ["256x256", "300x300"],
        "side": [1, 2, 3],
        "api": "chats",
    }
    with pytest.raises(ConfigError) as caught:
        _Lists.from_params(params, model="m", source="models.yaml")
    assert [v.field for v in caught.value.field_violations] == [f"params.{key}" for key in params]
    assert str(caught.value) == (
        "models.yaml: model 'm': params.names: must be a non-empty list of strings (got []); "
        "params.mean: must be a list of 3 numbers (got [0.5, 0.5]); "
        "params.std: must be a list of 3 numbers > 0 (got [1, 0, 1]); "
        "params.sizes: must be a list of at most 2 strings, each one of '256x256', '512x512', '1024x1024' "
        "(got ['256x256', '300x300']); "
        "params.side: must be an integer >= 1 or a list of 2 integers >= 1 (got [1, 2, 3]); "
        "params.api: must be one of 'completions', 'chat' (got 'chats')"
    )
    with pytest.raises(ConfigError, match=r"params\.names: must be a non-empty list of strings \(got 'cat'\)"):
        _Lists.from_params({"names": "cat"}, model="m")  # a string is not a list of its letters
    with pytest.raises(ConfigError, match=r"params\.mean: must be a list of 3 numbers \(got \[0\.5, 'x', 1\]\)"):
        _Lists.from_params({"mean": [0.5, "x", 1]}, model="m")


def test_an_integral_float_is_an_integer_as_a_protobuf_struct_carries_it():
    assert _Example.from_params({"count": 4.0, "limit": 8.0}, model="m") == _Example(count=4, limit=8)
    assert isinstance(_Example.from_params({"count": 4.0}, model="m").count, int)
    assert _Lists.from_params({"side": [480.0, 640.0]}, model="m").side == (480, 640)
    with pytest.raises(ConfigError, match=r"params\.count: must be an integer between 1 and 8 \(got 2\.5\)"):
        _Example.from_params({"count": 2.5}, model="m")


def test_a_field_of_another_type_is_a_programming_error():
    @dataclasses.dataclass(frozen=True)
    class _Wrong(ModelSettings):
        names: frozenset[str] = setting(frozenset())

    with pytest.raises(TypeError, match="tuple"):
        _Wrong.from_params({"names": ["a"]}, model="m")


def test_a_refusal_when_serving_is_a_failed_precondition_with_the_same_words():
    error = unservable(settings_error("m", [("count", "must be an integer >= 1 (got 0)")]))
    assert isinstance(error, FailedPreconditionError) and error.reason == "MODEL_CONFIG_INVALID"
    assert str(error) == (
        "model 'm' cannot be served: params.count: must be an integer >= 1 (got 0) (configs/models.yaml)"
    )


def test_zero_shot_settings_own_their_namespace():
    settings = ZeroShotSettings.from_spec(_spec(zero_shot_template="About {label}", zero_shot_threshold=-0.1))
    assert (settings.template, settings.temperature, settings.threshold) == ("About {label}", 0.05, -0.1)
    with pytest.raises(ConfigError) as caught:
        ZeroShotSettings.from_spec(_spec(zero_shot_template="About", zero_shot_temperature=0, zero_shot_temprature=1))
    fields = [v.field for v in caught.value.field_violations]
    assert fields == ["params.zero_shot_template", "params.zero_shot_temperature", "params.zero_shot_temprature"]
    assert "must contain '{label}'" in str(caught.value) and "is not a known setting" in str(caught.value)


def test_nlp_batching_keeps_the_service_defaults_for_keys_not_given():
    defaults = BatchingConfig(max_batch_size=4, max_wait_s=0.25, max_queued=512)
    assert BatchingSettings.from_spec(_spec()).config(defaults) == defaults
    given = BatchingSettings.from_spec(_spec(max_batch_size=8, max_wait_ms=0)).config(defaults)
    assert (given.max_batch_size, given.max_wait_s, given.max_queued) == (8, 0.0, 512)
    with pytest.raises(ConfigError, match=r"params\.max_wait_ms: must be a number between 0 and 10000"):
        BatchingSettings.from_spec(_spec(max_wait_ms=20_000))


def test_the_nlp_runner_refuses_a_queue_smaller_than_a_request_at_start():
    with pytest.raises(ConfigError) as caught:
        NlpRunner(ModelHost([_spec(max_queued_texts=100)]), NlpLimits())
    assert [v.field for v in caught.value.field_violations] == ["params.max_queued_texts"]
    assert "100 is below the 256 texts a request may carry" in str(caught.value)
    with pytest.raises(ConfigError, match=r"params\.zero_shot_temperature"):
        NlpRunner(ModelHost([_spec(zero_shot_temperature=-1)]))
    NlpRunner(ModelHost([_spec("language-detection", zero_shot_temperature=-1)]))  # not an embedding model


class _Counting(Backend):
    provider = "counting"
    tasks = frozenset({"text-generation"})

    def load(self) -> None:
        self.active_sequences, self.tokens_generated = 1, 42

    def run(self, request, ctx: RequestContext):
        raise NotImplementedError

    def info(self):
        return {"active_sequences": self.active_sequences, "tokens_generated": self.tokens_generated}


async def test_the_llm_collector_exports_the_compute_counters_of_info():
    spec = ModelSpec(name="counting", task="text-generation", provider="counting", service="llm")
    host = ModelHost([spec], backend_factory=lambda s, _store: _Counting(s))
    await host.load_all()
    figures = {
        (metric.name, sample.name): sample.value for metric in LlmCollector(host).collect() for sample in metric.samples
    }
    assert figures[("aisemble_llm_active_sequences", "aisemble_llm_active_sequences")] == 1
    assert figures[("aisemble_llm_generated_tokens", "aisemble_llm_generated_tokens_total")] == 42
