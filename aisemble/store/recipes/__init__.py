"""The default recipe catalogue: the built-in recipes, then those of `aisemble.recipes` entry points (cheap)."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from aisemble.store.recipe import Recipe
from aisemble.store.recipes import langid, minilm, smollm2, vision
from aisemble.store.recipes.langid import LANGID
from aisemble.store.recipes.minilm import MINILM_L6
from aisemble.store.recipes.smollm2 import SMOLLM2_135M_INSTRUCT, SMOLLM2_135M_INSTRUCT_ONNX
from aisemble.store.recipes.vision import DOC_ORIENTATION, NUDENET_320N, PPOCR_V4, YOLOV8_FALL

__all__ = [
    "DOC_ORIENTATION",
    "ENTRY_POINT_GROUP",
    "LANGID",
    "MINILM_L6",
    "NUDENET_320N",
    "PPOCR_V4",
    "RECIPES",
    "SMOLLM2_135M_INSTRUCT",
    "SMOLLM2_135M_INSTRUCT_ONNX",
    "YOLOV8_FALL",
    "register",
]

logger = logging.getLogger("aisemble.store")

#: The entry-point group of recipes declared outside the library (the fine-tuning service's trained models: the
#: library names no service): name = the artifact, value = a Recipe object.
ENTRY_POINT_GROUP = "aisemble.recipes"

#: The registry: artifact name -> recipe. `aisemble models prepare` with no names builds all of these.
RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add a recipe to the default registry (a name may be registered once)."""
    if recipe.name in RECIPES:
        raise ValueError(f"recipe '{recipe.name}' is already registered")
    RECIPES[recipe.name] = recipe
    return recipe


# In this order `aisemble models prepare` and `models status` list them (a derived artifact after its source).
for _recipe in (
    smollm2.HF_RECIPE,
    minilm.RECIPE,
    langid.RECIPE,
    vision.FALL_RECIPE,
    vision.PPOCR_RECIPE,
    vision.ORIENTATION_RECIPE,
    vision.NUDENET_RECIPE,
    smollm2.ONNX_RECIPE,
):
    register(_recipe)
del _recipe


def _declared_recipes() -> list[Recipe]:
    """The recipes of the `aisemble.recipes` entry points (by name); one that fails to load is logged and skipped."""
    found: list[Recipe] = []
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            recipe = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken declaration must not take the whole store down
            logger.error("recipe entry point %s (%s) failed to load: %s", entry.name, entry.value, exc)
            continue
        if not isinstance(recipe, Recipe) or recipe.name != entry.name:
            logger.error("recipe entry point %s (%s) is not a Recipe named %s", entry.name, entry.value, entry.name)
            continue
        found.append(recipe)
    return found


# After the built-in ones (they may require those): the trained artifacts.
list(map(register, _declared_recipes()))
