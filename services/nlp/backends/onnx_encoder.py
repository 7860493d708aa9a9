"""Text encoders on ONNX Runtime: sentence embeddings (mean pooling) and classifier heads (logits).

An artifact in the model store that this backend serves is one folder with:

- `model.onnx`: ONE self-contained graph. Inputs: `input_ids` (required), `attention_mask` and
  `token_type_ids` (each optional), int64, shape [batch, sequence], both axes dynamic.
  Output, for an embedding model (task `embedding`): `last_hidden_state` [batch, sequence, hidden],
  mean-pooled here over the attention mask (sentence-transformers' pooling), or an already pooled
  [batch, hidden]. For a classifier (task `text-classification`): `logits` float32 [batch, num_labels].
- `tokenizer.json`: a Hugging Face `tokenizers` file. Padding (to the longest text of a batch) and
  truncation (to the context window) are set here, whatever the file says.
- the labels of a classifier, index i naming logit i: `info.labels` in the manifest, or a
  `labels.json` file holding a JSON list of strings (or `{"labels": [...]}`); unique, non-empty.
- `manifest.json`: the store's manifest (file list with sha256 and sizes). Its `info` may also give
  `max_length` (the context window, if the registry entry sets no `max_tokens`), `tokenizer` (the
  tokenizer file name), `onnx.file` and `onnx.output`, and for a classifier `problem_type`
  (`single_label_classification` or `multi_label_classification`, reported in `info()`; each
  request's `multi_label` picks softmax or per-label sigmoid over the logits).

A fine-tuning job writes exactly this (torch: encoder + head behind a keyword-argument wrapper,
`torch.onnx.export(..., dynamo=False)` with dynamic batch and sequence axes) and registers a model
with `task: text-classification`, `provider: onnxruntime`, `model_path: <folder>`.

Registry `params` (all optional; OnnxEncoderSettings, read at load) override the defaults: `onnx_file`,
`tokenizer_file`, `output`, `labels` (a list), `labels_file`, `intra_op_threads`, `intra_op_spinning`
(true/false; ONNX Runtime's default is true).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aisemble.errors import FailedPreconditionError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.onnx_runtime import OnnxRuntimeSettings, inference_session
from aisemble.hosting.settings import setting
from services.nlp.types import Encoded

__all__ = ["ENCODER_INPUTS", "OnnxEncoderBackend", "OnnxEncoderSettings"]

#: The graph inputs this backend knows how to feed.
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>")


def _unique_labels(labels: tuple[str, ...]) -> str | None:
    if not all(labels) or len(set(labels)) != len(labels):
        return f"must be unique, non-empty strings (got {list(labels)!r})"
    return None


@dataclass(frozen=True)
class OnnxEncoderSettings(OnnxRuntimeSettings):
    """An encoder's params (each file or output, when not set, is the manifest's, else the default name) and
    ONNX Runtime's threads."""

    onnx_file: str | None = setting(None)
    tokenizer_file: str | None = setting(None)
    output: str | None = setting(None)
    labels: tuple[str, ...] | None = setting(None, min_items=1, check=_unique_labels)
    labels_file: str | None = setting(None)


class OnnxEncoderBackend(Backend):
    """A transformer encoder exported to ONNX: embeddings (task `embedding`) or logits (`text-classification`).

    `run(texts)` encodes a whole batch in one ONNX Runtime call and returns one `Encoded` per text.
    """

    provider = "onnxruntime"
    tasks = frozenset({"embedding", "text-classification"})
    #: This backend's settings in the registry entry's params, read once at load.
    settings_class: ClassVar[type[OnnxEncoderSettings]] = OnnxEncoderSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: Any = None
        self.tokenizer: Any = None
        self.max_tokens = 0
        self.dimensions = 0
        self.labels: tuple[str, ...] = ()
        self.problem_type = "single_label_classification"
        self._inputs: tuple[str, ...] = ()
        self._output = ""
        self._pooled = False
        self._files: dict[str, str] = {}
        self.settings = self.settings_class()

    @property
    def is_classifier(self) -> bool:
        """True for a classifier head (logits over fixed labels), False for an embedding model."""
        return self.spec.task == "text-classification"

    # --- Backend ---
    def load(self) -> None:
        self.settings = settings = self.settings_class.for_serving(self.spec)  # refused: before any file is read
        if self.store is None:
            raise FailedPreconditionError(f"model '{self.spec.name}' needs the model store")
        folder = self.store.require(self.spec.model_path)
        manifest = self.store.manifest(self.spec.model_path)
        info: Mapping[str, Any] = manifest.info if manifest is not None else {}
        raw_onnx = info.get("onnx")
        onnx_info: Mapping[str, Any] = raw_onnx if isinstance(raw_onnx, Mapping) else {}
        onnx_file = self._file(folder, settings.onnx_file or onnx_info.get("file") or "model.onnx")
        tokenizer_file = self._file(folder, settings.tokenizer_file or info.get("tokenizer") or "tokenizer.json")
        self.max_tokens = int(self.spec.max_tokens or info.get("max_length") or 0)
        self.tokenizer = self._load_tokenizer(tokenizer_file)
        self.session = self._load_session(onnx_file)
        names = [i.name for i in self.session.get_inputs()]
        unknown = [n for n in names if n not in ENCODER_INPUTS]
        if "input_ids" not in names or unknown:
            raise FailedPreconditionError(
                f"model '{self.spec.name}': {onnx_file.name} takes {names}; expected input_ids and optionally "
                "attention_mask, token_type_ids",
                reason="MODEL_ARTIFACT_INVALID",
            )
        self._inputs = tuple(names)
        outputs = [o.name for o in self.session.get_outputs()]
        wanted = settings.output or onnx_info.get("output")
        if not wanted:
            preferred = "logits" if self.is_classifier else "last_hidden_state"
            wanted = preferred if preferred in outputs else outputs[0]
        if wanted not in outputs:
            raise FailedPreconditionError(
                f"model '{self.spec.name}': {onnx_file.name} has no output '{wanted}' (it has {outputs})",
                reason="MODEL_ARTIFACT_INVALID",
            )
        self._output = str(wanted)
        if self.is_classifier:
            self.labels = self._load_labels(folder, info)
            self.problem_type = str(info.get("problem_type") or self.problem_type)
        self._files = {"onnx": onnx_file.name, "tokenizer": tokenizer_file.name}
        self._warm_up(onnx_file.name)

    def run(self, request: Sequence[str], ctx: RequestContext) -> list[Encoded]:
        """Encode a batch of texts in one ONNX Runtime call."""
        ctx.check()
        encodings = self.tokenizer.encode_batch(list(request))
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed: dict[str, np.ndarray] = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64)}
        if "attention_mask" in self._inputs:
            feed["attention_mask"] = mask
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        output = np.asarray(self.session.run([self._output], feed)[0], dtype=np.float32)
        if not self.is_classifier and not self._pooled:
            # sentence-transformers' mean pooling: the average of the token vectors the mask keeps.
            weights = mask[..., None].astype(np.float32)
            output = (output * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        counts = mask.sum(axis=1)
        return [
            Encoded(values=output[i], token_count=int(counts[i]), truncated=bool(encodings[i].overflowing))
            for i in range(len(encodings))
        ]

    def info(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.spec.name,
            "task": self.spec.task,
            "max_tokens": self.max_tokens,
            "dimensions": self.dimensions,
            "labels": list(self.labels),
            "files": dict(self._files),
        }

    def cleanup(self) -> None:
        self.session = None
        self.tokenizer = None

    # --- loading ---
    def _file(self, folder: Path, relative: Any) -> Path:
        """A file of the artifact; refuses paths that leave its folder."""
        path = (folder / str(relative)).resolve()
        if not path.is_relative_to(folder.resolve()) or not path.is_file():
            raise FailedPreconditionError(
                f"model '{self.spec.name}': {relative!r} is not a file of the artifact {folder.name}",
                reason="MODEL_ARTIFACT_INVALID",
            )
        return path

    def _load_tokenizer(self, path: Path) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
        padding = tokenizer.padding
        if padding is not None:
            pad_id, pad_token = int(padding["pad_id"]), str(padding["pad_token"])
        else:
            found = [(t, i) for t in _PAD_TOKENS if (i := tokenizer.token_to_id(t)) is not None]
            if not found:
                raise FailedPreconditionError(
                    f"model '{self.spec.name}': {path.name} has no padding token", reason="MODEL_ARTIFACT_INVALID"
                )
            pad_token, pad_id = found[0]
        # Pad to the longest text of each batch (not to a fixed length: batch 1 would pay for 256 tokens).
        tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
        if not self.max_tokens:
            truncation = tokenizer.truncation
            self.max_tokens = int(truncation["max_length"]) if truncation else 512
        tokenizer.enable_truncation(max_length=self.max_tokens)
        return tokenizer

    def _load_session(self, path: Path) -> Any:
        return inference_session(path, self.spec.device, self.settings)  # spinning: ONNX Runtime's, unless set

    def _load_labels(self, folder: Path, info: Mapping[str, Any]) -> tuple[str, ...]:
        raw: Any = list(self.settings.labels) if self.settings.labels else info.get("labels")
        if raw is None:
            labels_file = folder / (self.settings.labels_file or "labels.json")
            if not labels_file.is_file():
                raise FailedPreconditionError(
                    f"classifier '{self.spec.name}' names no labels: give `labels` in the manifest info, "
                    "a labels.json file, or `params.labels`",
                    reason="MODEL_ARTIFACT_INVALID",
                )
            raw = json.loads(self._file(folder, labels_file.name).read_text(encoding="utf-8"))
            if isinstance(raw, Mapping):
                raw = raw.get("labels")
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(label, str) and label for label in raw)
            or len(set(raw)) != len(raw)
        ):
            raise FailedPreconditionError(
                f"classifier '{self.spec.name}': labels must be a non-empty list of unique, non-empty strings",
                reason="MODEL_ARTIFACT_INVALID",
            )
        return tuple(raw)

    def _warm_up(self, onnx_name: str) -> None:
        """One call at load: allocates, and checks the output's shape against the task."""
        encoding = self.tokenizer.encode("warm up")
        feed = {"input_ids": np.array([encoding.ids], dtype=np.int64)}
        if "attention_mask" in self._inputs:
            feed["attention_mask"] = np.array([encoding.attention_mask], dtype=np.int64)
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.array([encoding.type_ids], dtype=np.int64)
        output = self.session.run([self._output], feed)[0]
        where = f"model '{self.spec.name}': {onnx_name} output '{self._output}'"
        if self.is_classifier:
            if output.ndim != 2 or output.shape[1] != len(self.labels):
                raise FailedPreconditionError(
                    f"{where} has shape {list(output.shape)}; expected [batch, {len(self.labels)}] for "
                    f"the {len(self.labels)} labels",
                    reason="MODEL_ARTIFACT_INVALID",
                )
            self.dimensions = len(self.labels)
            return
        if output.ndim not in (2, 3):
            raise FailedPreconditionError(
                f"{where} has shape {list(output.shape)}; expected [batch, sequence, hidden] or [batch, hidden]",
                reason="MODEL_ARTIFACT_INVALID",
            )
        self._pooled = output.ndim == 2
        self.dimensions = int(output.shape[-1])
