"""The registry's state lives in the state directory, seeded from the shipped (read-only) configs/models.yaml."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

from aisemble.config.models import load_models
from aisemble.config.schema import CONFIG_DIR
from services.registry.store import ModelRegistry, default_registry_path, seed_registry, write_models_file

SEED = CONFIG_DIR / "models.yaml"


def test_the_default_state_is_in_the_state_directory_not_in_configs():
    path = default_registry_path()
    assert path.is_relative_to(os.environ["AISEMBLE_STATE_DIR"])
    assert not path.is_relative_to(CONFIG_DIR)


def test_the_first_start_copies_the_seed_with_its_comments(tmp_path):
    path = tmp_path / "registry" / "models.yaml"
    seed_registry(path, SEED)
    assert path.read_text() == SEED.read_text()
    assert load_models(path) == load_models(SEED)


def test_a_registration_writes_the_state_and_never_the_seed(tmp_path):
    seed = tmp_path / "seed.yaml"
    seed.write_text(SEED.read_text())
    path = tmp_path / "state" / "models.yaml"
    seed_registry(path, seed)
    registry = ModelRegistry(path)
    base = load_models(seed)["minilm-l6"]
    asyncio.run(registry.register(replace(base, name="minilm-copy")))
    assert seed.read_text() == SEED.read_text()
    assert "minilm-copy" in load_models(path)
    assert not list(seed.parent.glob(".seed.yaml.lock"))


def test_a_newer_seed_adds_and_updates_what_the_operator_left_alone(tmp_path):
    models = load_models(SEED)
    names = list(models)
    first, second, third = (models[n] for n in names[:3])
    seed = tmp_path / "seed.yaml"
    write_models_file(seed, [first, second, third])
    path = tmp_path / "state" / "models.yaml"
    seed_registry(path, seed)
    # The operator deregisters the first model and changes the second.
    changed = replace(second, description="the operator's own words")
    write_models_file(path, [changed, third])
    # A newer release changes every shipped entry and ships one more.
    fourth = models[names[3]]
    newer = [replace(spec, description=f"{spec.description} (new)") for spec in (first, second, third)]
    write_models_file(seed, [*newer, fourth])
    seed_registry(path, seed)
    state = load_models(path)
    assert first.name not in state  # deregistered: stays removed
    assert state[second.name].description == "the operator's own words"  # changed: kept
    assert state[third.name].description.endswith("(new)")  # untouched: updated
    assert state[fourth.name] == fourth  # new: added
    # And a restart with the same seed changes nothing.
    before = path.read_text()
    seed_registry(path, seed)
    assert path.read_text() == before
