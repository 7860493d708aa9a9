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
