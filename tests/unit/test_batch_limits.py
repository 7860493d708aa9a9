"""Continuous-batching bounds come from the registry entry's params and are checked."""

import dataclasses

import pytest

from aisemble.config.models import load_models
from aisemble.errors import FailedPreconditionError
from services.llm.backends.onnx_backend import OnnxLlmBackend
from services.llm.scheduler import BatchLimits


def _backend() -> OnnxLlmBackend:
    return OnnxLlmBackend(load_models()["smollm2-135m-onnx"])


def test_defaults_and_overrides():
    assert _backend()._batch_limits({}) == BatchLimits()
    limits = _backend()._batch_limits({"max_batch_size": 4, "max_prefill_tokens": 64, "gather_ms": 0})
    assert dataclasses.astuple(limits)[:4] == (4, 64, 32768, 64)
    assert limits.gather_gap_s == 0.0 and limits.gather_max_s == BatchLimits().gather_max_s


@pytest.mark.parametrize("params", [{"max_batch_size": 0}, {"max_prefill_tokens": -1}, {"gather_ms": -5}])
def test_bad_bounds_are_refused_with_the_param_named(params):
    with pytest.raises(FailedPreconditionError) as caught:
        _backend()._batch_limits(params)
    assert next(iter(params)) in str(caught.value)


def test_every_bad_bound_is_one_config_error_naming_file_model_and_params():
    from aisemble.config.schema import ConfigError
    from services.llm.backends.local import ContinuousBatchingSettings

    spec = load_models()["smollm2-135m-onnx"]
    params = {"max_batch_size": "4", "max_waiting": True, "gather_max_ms": -1, "intra_op_threads": 2}
    with pytest.raises(ConfigError) as caught:
        ContinuousBatchingSettings.from_spec(spec, params)
    error = caught.value
    assert error.reason == "INVALID_CONFIG"
    assert [v.field for v in error.field_violations] == [
        "params.max_batch_size",
        "params.max_waiting",
        "params.gather_max_ms",
    ]  # intra_op_threads belongs to the ONNX backend's own params: left alone
    assert str(error).startswith("configs/models.yaml: model 'smollm2-135m-onnx': params.max_batch_size: ")
    assert "must be an integer >= 1 (got '4')" in str(error)


def test_batching_can_be_turned_off_and_a_bad_flag_is_refused():
    from services.llm.backends.local import ContinuousBatchingSettings

    spec = load_models()["smollm2-135m-onnx"]
    assert ContinuousBatchingSettings.from_spec(spec, {"continuous_batching": False}).continuous_batching is False
    with pytest.raises(FailedPreconditionError) as caught:
        _backend()._batch_limits({"continuous_batching": "no"})
    assert caught.value.reason == "MODEL_CONFIG_INVALID"
    assert "params.continuous_batching: must be true or false" in str(caught.value)
