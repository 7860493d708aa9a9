"""Text classification on a BERT-style encoder (MiniLM): a linear head on the mean-pooled encoder, optionally
training its top layers, exported to ONNX in the layout the NLP service serves.

The base artifact needs the torch encoder in `hf/` and the tokenizer the NLP service uses in
`tokenizer.json` (the `minilm-l6` store artifact has both).

- `unfrozen_layers` k: the top k encoder layers are trained with the head (at learning_rate / 100: they
  are pre-trained), the rest stays frozen. The frozen layers' outputs are computed once per example
  and reused every epoch (exact: frozen layers in eval mode give the same output each time), so an
  epoch costs only the top k layers.
- Text in CJK scripts. MiniLM's English WordPiece vocabulary maps about a quarter of Japanese tokens to
  [UNK] (a kana run with one unknown character becomes a single [UNK]). When the training texts hold
  CJK characters, every character of them that the vocabulary lacks is added to it (as `c` and `##c`),
  and the classifier gets a second expert: a bag of learned token embeddings (fastText-like) with its
  own linear head. A script gate mixes the two: g = min(1, 2 x the share of CJK tokens), logits =
  (1 - g) x encoder head + g x bag head. The encoder still reads an added token as [UNK], as before;
  English text is classified by the encoder alone, Japanese mostly by the bag. Both the added
  vocabulary and the gate live in the exported tokenizer.json and ONNX graph: the NLP service needs
  nothing new.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from services.finetune.examples import read_examples
from services.finetune.trainers.base import Reporter, Trainer, TrainingFailedError, WorkerRequest, warmup_then_linear
from services.finetune.types import ClassificationExample, LogSeverity, Task

__all__ = ["ClassifierTrainer", "EncoderClassifier", "is_cjk"]

#: Dimensions of the token-bag expert's embeddings.
BAG_DIMENSIONS = 64
#: Hash buckets of the token-bag expert's adjacent-token pairs (character bigrams for CJK text).
PAIR_BUCKETS = 1 << 15
_PAIR_MULTIPLIER = 1_000_003
#: Regularising the token-bag expert (its embeddings learn from the examples alone): the share of tokens
#: dropped from the bag at each training step, and the weight decay of its parameters (4-fold
#: cross-validation on the shipped Japanese training texts: 0.896 without either, 0.912 with both).
BAG_TOKEN_DROPOUT = 0.2
BAG_WEIGHT_DECAY = 0.1
#: The unfrozen encoder layers learn this much slower than the head.
ENCODER_LR_FACTOR = 0.01
#: Cache the frozen layers' outputs when they take at most this many bytes.
_MAX_CACHE_BYTES = 1 << 30
#: Characters added to the vocabulary at most (each as `c` and `##c`).
_MAX_ADDED_CHARACTERS = 8000
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OPSET = 17


def is_cjk(character: str) -> bool:
    """True for Han, Hiragana, Katakana, Hangul and full-width forms."""
    code = ord(character)
    return (
        0x3040 <= code <= 0x30FF  # Hiragana, Katakana
        or 0x3400 <= code <= 0x4DBF  # Han extension A
        or 0x4E00 <= code <= 0x9FFF  # Han
        or 0xAC00 <= code <= 0xD7AF  # Hangul syllables
        or 0xF900 <= code <= 0xFAFF  # Han compatibility
        or 0xFF00 <= code <= 0xFFEF  # half-width and full-width forms
    )


def _read(path: Path) -> list[ClassificationExample]:
    return [e for e in read_examples(path, Task.TEXT_CLASSIFICATION) if isinstance(e, ClassificationExample)]


def _texts(examples: Sequence[Any]) -> list[str]:
    return [e.text for e in examples]


class ClassifierTrainer(Trainer):
    """Encoder + linear head (+ the token-bag expert for CJK text), trained on text/label examples."""

    def __init__(self, request: WorkerRequest, reporter: Reporter) -> None:
        super().__init__(request, reporter)
        self.train_examples = _read(self.job_dir / "train.jsonl")
        self.validation_examples = _read(self.job_dir / "validation.jsonl")
        self.labels = list(request.labels)
        self.added: list[str] = []
        self.tokenizer_json: dict[str, Any] = {}

    @property
    def example_count(self) -> int:
        return len(self.train_examples)

    # --- preparation ---
    def _tokenizer(self) -> Any:
        """The base tokenizer, its vocabulary extended with the unknown characters of CJK training texts."""
        from tokenizers import Tokenizer

        base = Path(self.request.base_dir)
        self.tokenizer_json = json.loads((base / "tokenizer.json").read_text(encoding="utf-8"))
        model = self.tokenizer_json.get("model", {})
        tokenizer = Tokenizer.from_str(json.dumps(self.tokenizer_json))
        texts = _texts(self.train_examples)
        if model.get("type") == "WordPiece" and any(is_cjk(c) for text in texts for c in text):
            vocab: dict[str, int] = model["vocab"]
            normalizer = tokenizer.normalizer
            seen: set[str] = set()
            for text in texts:
                for character in normalizer.normalize_str(text) if normalizer else text:
                    if character.isspace() or character in seen or character in vocab:
                        continue
                    seen.add(character)
                    if len(self.added) < _MAX_ADDED_CHARACTERS:
                        self.added.append(character)
            size = len(vocab)
            for index, character in enumerate(self.added):
                vocab[character] = size + 2 * index
                vocab["##" + character] = size + 2 * index + 1
            tokenizer = Tokenizer.from_str(json.dumps(self.tokenizer_json))
            self.reporter.log(
                LogSeverity.INFO,
                f"CJK text: added {len(self.added)} characters to the vocabulary and a token-bag expert",
            )
        self.tokenizer_json["truncation"] = {
            "direction": "Right",
            "max_length": self.settings.max_length,
            "strategy": "LongestFirst",
            "stride": 0,
        }
        tokenizer.enable_truncation(max_length=self.settings.max_length)
        pad_id = tokenizer.token_to_id("[PAD]")
        tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
        return tokenizer

    def prepare(self, total_steps: int) -> None:
        from transformers import AutoModel

        unknown = sorted({e.label for e in self.train_examples} - set(self.labels))
        if unknown:
            raise TrainingFailedError(f"labels {unknown} are not in the job's label set")
        self.tokenizer = self._tokenizer()
        encoder = AutoModel.from_pretrained(
            Path(self.request.base_dir) / "hf", dtype=torch.float32, attn_implementation="eager"
        )
        base_vocab = int(encoder.config.vocab_size)
        unk = self.tokenizer.token_to_id("[UNK]")
        cjk_mask = None
        if self.added:
            vocab = self.tokenizer_json["model"]["vocab"]
            cjk_mask = torch.zeros(len(vocab))
            for token, index in vocab.items():
                if any(is_cjk(c) for c in token.removeprefix("##")):
                    cjk_mask[index] = 1.0
        self.model = EncoderClassifier(encoder, len(self.labels), base_vocab, 100 if unk is None else unk, cjk_mask)
        layers = self.model.layer_count
        self.frozen = layers - int(self.settings.unfrozen_layers or 0)
        for parameter in encoder.parameters():
            parameter.requires_grad_(False)
        encoder_parameters = [p for layer in self.model.layers[self.frozen :] for p in layer.parameters()]
        for parameter in encoder_parameters:
            parameter.requires_grad_(True)
        bag_names = ("bag.", "pairs.", "bag_head.")
        named = [(name, p) for name, p in self.model.named_parameters() if not name.startswith("encoder.")]
        head_parameters = [p for name, p in named if not name.startswith(bag_names)]
        bag_parameters = [p for name, p in named if name.startswith(bag_names)]
        groups = [{"params": head_parameters, "lr": self.settings.learning_rate}]
        if bag_parameters:
            groups.append(
                {"params": bag_parameters, "lr": self.settings.learning_rate, "weight_decay": BAG_WEIGHT_DECAY}
            )
        if encoder_parameters:
            groups.append({"params": encoder_parameters, "lr": self.settings.learning_rate * ENCODER_LR_FACTOR})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_then_linear(total_steps))
        self.targets = torch.tensor([self.labels.index(e.label) for e in self.train_examples])
        self.cache = self._cache_frozen_layers()
        self.reporter.log(
            LogSeverity.INFO,
            f"{len(self.train_examples)} training and {len(self.validation_examples)} validation examples, "
            f"{len(self.labels)} labels; training the head and {layers - self.frozen} of {layers} encoder layers",
        )

    def _encode(self, texts: Sequence[str]) -> tuple[Any, Any, Any]:
        encodings = self.tokenizer.encode_batch(list(texts))
        return (
            torch.tensor([e.ids for e in encodings], dtype=torch.long),
            torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
            torch.tensor([e.type_ids for e in encodings], dtype=torch.long),
        )

    def _cache_frozen_layers(self) -> list[tuple[Any, Any, Any]] | None:
        """Each training example's ids, type ids and frozen-layer output (unpadded), or None when too big."""
        lengths = [len(e.ids) for e in self.tokenizer.encode_batch(_texts(self.train_examples))]
        hidden = int(self.model.encoder.config.hidden_size)
        if sum(lengths) * hidden * 4 > _MAX_CACHE_BYTES:
            return None
        cache: list[tuple[Any, Any, Any]] = []
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(self.train_examples), 64):
                ids, mask, types = self._encode(_texts(self.train_examples[start : start + 64]))
                states = self.model.lower(ids, mask, types, self.frozen)
                for row in range(ids.shape[0]):
                    n = int(mask[row].sum())
                    cache.append((ids[row, :n].clone(), types[row, :n].clone(), states[row, :n].clone()))
        return cache

    def _batch(self, indices: Sequence[int]) -> tuple[Any, Any, Any]:
        """ids, mask and frozen-layer states of training examples, padded to the longest."""
        if self.cache is None:
            ids, mask, types = self._encode([self.train_examples[i].text for i in indices])
            with torch.no_grad():
                return ids, mask, self.model.lower(ids, mask, types, self.frozen)
        rows = [self.cache[i] for i in indices]
        longest = max(r[0].shape[0] for r in rows)
        hidden = rows[0][2].shape[-1]
        ids = torch.zeros(len(rows), longest, dtype=torch.long)
        mask = torch.zeros(len(rows), longest, dtype=torch.long)
        states = torch.zeros(len(rows), longest, hidden)
        for k, (row_ids, _types, row_states) in enumerate(rows):
            n = row_ids.shape[0]
            ids[k, :n], mask[k, :n], states[k, :n] = row_ids, 1, row_states
        return ids, mask, states

    # --- training ---
    def train_step(self, indices: Sequence[int]) -> float:
        self.model.train()
        ids, mask, states = self._batch(indices)
        logits = self.model.classify(ids, mask, self.model.upper(states, mask, self.frozen))
        loss = torch.nn.functional.cross_entropy(logits, self.targets[list(indices)])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def _logits(self, texts: Sequence[str]) -> Any:
        self.model.eval()
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(texts), 64):
                ids, mask, types = self._encode(texts[start : start + 64])
                outputs.append(self.model(ids, mask, types))
        return torch.cat(outputs)

    def evaluate(self) -> tuple[float, float | None] | None:
        if not self.validation_examples:
            return None
        logits = self._logits(_texts(self.validation_examples))
        targets = torch.tensor([self.labels.index(e.label) for e in self.validation_examples])
        loss = float(torch.nn.functional.cross_entropy(logits, targets))
        accuracy = float((logits.argmax(-1) == targets).float().mean())
        return loss, accuracy

    def state(self) -> dict[str, Any]:
        trainable = {name: p.detach().clone() for name, p in self.model.named_parameters() if p.requires_grad}
        return {
            "weights": trainable,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        missing = set(state["weights"]) - {name for name, _ in self.model.named_parameters()}
        if missing:
            raise TrainingFailedError(f"the checkpoint does not fit this model (unknown weights {sorted(missing)[:3]})")
        self.model.load_state_dict(state["weights"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    # --- export ---
    def export(self, folder: Path, metrics: dict[str, float]) -> dict[str, Any]:
        import numpy as np
        import onnxruntime as ort

        self.model.eval()
        (folder / "tokenizer.json").write_text(json.dumps(self.tokenizer_json, ensure_ascii=False), encoding="utf-8")
        sample = _texts(self.validation_examples or self.train_examples)[:32]
        example = self._encode(["an example sentence for the export", "short"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
            torch.onnx.export(
                self.model,
                example,
                str(folder / "model.onnx"),
                input_names=list(_INPUTS),
                output_names=["logits"],
                dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in _INPUTS}, "logits": {0: "batch"}},
                opset_version=_OPSET,
                dynamo=False,
            )
        expected = self._logits(sample).numpy()
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        ids, mask, types = self._encode(sample)
        got = session.run(
            ["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
        )[0]
        difference = float(np.abs(expected - got).max())
        if difference > 1e-3:
            raise TrainingFailedError(
                f"the ONNX export differs from the trained model (max logit difference {difference:g})"
            )
        self.reporter.log(LogSeverity.INFO, f"exported to ONNX; max logit difference to torch {difference:.2g}")
        return {
            "task": "text-classification",
            "labels": self.labels,
            "problem_type": "single_label_classification",
            "max_length": self.settings.max_length,
            "tokenizer": "tokenizer.json",
            "onnx": {"file": "model.onnx", "inputs": list(_INPUTS), "output": "logits", "opset": _OPSET},
            "base_model": self.request.base_model,
            "base_artifact": self.request.base_artifact,
            "job_id": self.request.job_id,
            "unfrozen_layers": self.model.layer_count - self.frozen,
            "added_characters": len(self.added),
            "token_bag_expert": self.model.bag is not None,
            "max_logit_diff_vs_torch": difference,
            "metrics": metrics,
        }


class EncoderClassifier(torch.nn.Module):
    """Encoder, mean pooling and a linear head, plus the gated token-bag expert when cjk_mask is given.

    forward(input_ids, attention_mask, token_type_ids) -> logits: the exported graph. Training runs
    the same computation in two parts, lower() (frozen layers) and upper() (trained layers), so the
    frozen part can be computed once.
    """

    cjk: torch.Tensor

    def __init__(self, encoder: Any, labels: int, base_vocab: int, unk_id: int, cjk_mask: Any | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.base_vocab = base_vocab
        self.unk_id = unk_id
        hidden = int(encoder.config.hidden_size)
        self.head = torch.nn.Linear(hidden, labels)
        self.bag: Any = None
        if cjk_mask is not None:
            self.bag = torch.nn.Embedding(int(cjk_mask.shape[0]), BAG_DIMENSIONS)
            self.pairs = torch.nn.Embedding(PAIR_BUCKETS, BAG_DIMENSIONS)
            self.bag_head = torch.nn.Linear(BAG_DIMENSIONS, labels)
            self.register_buffer("cjk", cjk_mask)

    @property
    def layers(self) -> Any:
        """The encoder's transformer layers."""
        return self.encoder.encoder.layer

    @property
    def layer_count(self) -> int:
        """How many transformer layers the encoder has."""
        return len(self.layers)

    def _encoder_ids(self, ids: Any) -> Any:
        if self.bag is None:
            return ids
        return torch.where(ids >= self.base_vocab, torch.full_like(ids, self.unk_id), ids)

    @staticmethod
    def _attention_bias(mask: Any) -> Any:
        return (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min

    def _run_layers(self, states: Any, mask: Any, layers: Sequence[Any]) -> Any:
        bias = self._attention_bias(mask)
        for layer in layers:
            states = layer(states, attention_mask=bias)
            states = states[0] if isinstance(states, tuple) else states
        return states

    def lower(self, ids: Any, mask: Any, types: Any, frozen: int) -> Any:
        """Embeddings and the first `frozen` layers."""
        states = self.encoder.embeddings(input_ids=self._encoder_ids(ids), token_type_ids=types)
        return self._run_layers(states, mask, self.layers[:frozen])

    def upper(self, states: Any, mask: Any, frozen: int) -> Any:
        """The layers after the first `frozen`, then mean pooling over the mask."""
        states = self._run_layers(states, mask, self.layers[frozen:])
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    def classify(self, ids: Any, mask: Any, pooled: Any) -> Any:
        """Logits from the pooled encoder output (and the token bag, gated by the share of CJK tokens)."""
        logits = self.head(pooled)
        if self.bag is None:
            return logits
        weights = mask.unsqueeze(-1).to(pooled.dtype)
        present = weights.sum(1).clamp(min=1.0)
        if self.training:  # token dropout, for the bag only (the exported graph is in eval mode: no dropout)
            weights = weights * (torch.rand_like(weights) >= BAG_TOKEN_DROPOUT).to(weights.dtype)
        tokens = weights.sum(1).clamp(min=1.0)
        # Adjacent token pairs, hashed into buckets inside the graph: a kanji compound (患者, 契約) is one
        # feature however the vocabulary splits it, and the served ONNX graph computes it as training did.
        pair_ids = torch.remainder(ids[:, :-1] * _PAIR_MULTIPLIER + ids[:, 1:], PAIR_BUCKETS)
        pair_weights = weights[:, :-1] * weights[:, 1:]
        pairs = (self.pairs(pair_ids) * pair_weights).sum(1) / pair_weights.sum(1).clamp(min=1.0)
        bag = self.bag_head((self.bag(ids) * weights).sum(1) / tokens + pairs)
        gate = ((self.cjk[ids] * mask.to(pooled.dtype)).sum(1, keepdim=True) / present * 2.0).clamp(max=1.0)
        return (1.0 - gate) * logits + gate * bag

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        out = self.encoder(
            input_ids=self._encoder_ids(input_ids), attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        weights = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        pooled = (out.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return self.classify(input_ids, attention_mask, pooled)
