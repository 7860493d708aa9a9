"""Every shipped registry entry survives the trip through the registry contract unchanged."""

import pytest

from aisemble.config.models import load_models
from aisemble.rpc.registry_messages import model_to_proto, spec_from_proto

REGISTRY = load_models()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_round_trip(name):
    spec = REGISTRY[name]
    assert spec_from_proto(model_to_proto(spec)) == spec
