"""The default recipe catalogue: how each artifact is built from an installed model package (cheap to import)."""

from __future__ import annotations

from aisemble.store.recipe import Recipe
from aisemble.store.recipes import langid, minilm, smollm2, vision
from aisemble.store.recipes.langid import LANGID
from aisemble.store.recipes.minilm import MINILM_L6
from aisemble.store.recipes.smollm2 import SMOLLM2_135M_INSTRUCT, SMOLLM2_135M_INSTRUCT_ONNX
from aisemble.store.recipes.vision import DOC_ORIENTATION, NUDENET_320N, PPOCR_V4, YOLOV8_FALL

__all__ = [
    "DOC_ORIENTATION",
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
