"""Causal LM fine-tuning with LoRA (peft) on a transformers model (SmolLM2), saved as an adapter on its base.

Each prompt/response pair is one chat turn in the base's chat template (user: prompt, assistant:
response, then the end-of-turn token), so the result answers through Chat as it was trained; a base
without a chat template trains on prompt + response + end-of-sequence as plain text (for Complete).
The loss counts the response tokens only. LoRA adapters go on the attention projections (q, k, v, o)
where the model has them, peft's default targets otherwise; no dropout (short, reproducible runs).

The artifact is what services/llm/backends/transformers_backend.py serves: adapter_config.json and
adapter_model.safetensors, plus the base's config, generation config and tokenizer files; its
registry entry names the base artifact in params.base_model_path.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from services.finetune.examples import read_examples
from services.finetune.trainers.base import Reporter, Trainer, WorkerRequest, warmup_then_linear
from services.finetune.types import CompletionExample, LogSeverity, Task

__all__ = ["LoraTrainer"]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
#: Base files that are weights (never copied into the adapter's folder).
_WEIGHTS = (".safetensors", ".bin", ".gguf", ".onnx", ".onnx.data", ".pt")
_IGNORE = -100
_SAMPLE_TOKENS = 32


def _read(path: Path) -> list[CompletionExample]:
    return [e for e in read_examples(path, Task.CAUSAL_LM) if isinstance(e, CompletionExample)]


class LoraTrainer(Trainer):
    """LoRA adapters on a causal LM, trained on prompt/response pairs."""

    def __init__(self, request: WorkerRequest, reporter: Reporter) -> None:
        super().__init__(request, reporter)
        self.train_examples = _read(self.job_dir / "train.jsonl")
        self.validation_examples = _read(self.job_dir / "validation.jsonl")

    @property
    def example_count(self) -> int:
        return len(self.train_examples)

    def prepare(self, total_steps: int) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base = Path(self.request.base_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        if getattr(model, "hf_quantizer", None) is not None:
            setattr(model, "hf_quantizer", None)  # noqa: B010 - de-quantised fp32 weights: let peft train them
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = [t for t in LORA_TARGETS if t in names] or None
        config = LoraConfig(
            r=int(self.settings.lora_rank or 8),
            lora_alpha=float(self.settings.lora_alpha or 16.0),  # type: ignore[arg-type]
            target_modules=targets,
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(model, config)
        self.targets = targets or sorted(getattr(self.model.peft_config["default"], "target_modules", None) or ())
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.train_rows = [self._encode(e) for e in self.train_examples]
        self.validation_rows = [self._encode(e) for e in self.validation_examples]
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=self.settings.learning_rate, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_then_linear(total_steps))
        count = sum(p.numel() for p in trainable)
        self.reporter.log(
            LogSeverity.INFO,
            f"LoRA r={config.r} alpha={config.lora_alpha:g} on {', '.join(self.targets)}: {count:,} trainable "
            f"parameters; {len(self.train_rows)} training and {len(self.validation_rows)} validation examples; "
            f"format: {'chat template' if self.chat else 'plain text'}",
        )

    def _prefix(self, prompt: str) -> list[int]:
        if self.chat:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(prompt)["input_ids"])

    def _encode(self, example: CompletionExample) -> tuple[list[int], list[int]]:
        """(input ids, labels): the prompt's labels are ignored; cut to max_length keeping the response."""
        prefix = self._prefix(example.prompt)
        end = self.tokenizer.eos_token or ""
        response = list(self.tokenizer(example.response + end, add_special_tokens=False)["input_ids"])
        limit = self.settings.max_length
        response = response[: limit - 1]
        prefix = prefix[-(limit - len(response)) :]
        return prefix + response, [_IGNORE] * len(prefix) + response

    def _tensors(self, rows: Sequence[tuple[list[int], list[int]]]) -> tuple[Any, Any, Any]:
        longest = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), longest), _IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for k, (row_ids, row_labels) in enumerate(rows):
            n = len(row_ids)
            ids[k, :n] = torch.tensor(row_ids)
            labels[k, :n] = torch.tensor(row_labels)
            mask[k, :n] = 1
        return ids, mask, labels

    def train_step(self, indices: Sequence[int]) -> float:
        self.model.train()
        ids, mask, labels = self._tensors([self.train_rows[i] for i in indices])
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def evaluate(self) -> tuple[float, float | None] | None:
        if not self.validation_rows:
            return None
        self.model.eval()
        total, tokens = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(self.validation_rows), 8):
                ids, mask, labels = self._tensors(self.validation_rows[start : start + 8])
                count = int((labels[:, 1:] != _IGNORE).sum())
                total += float(self.model(input_ids=ids, attention_mask=mask, labels=labels).loss) * count
                tokens += count
        return total / max(1, tokens), None

    def state(self) -> dict[str, Any]:
        from peft import get_peft_model_state_dict

        return {
            "adapter": {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def _sample(self, prompt: str) -> str:
        self.model.eval()
        ids = torch.tensor([self._prefix(prompt)], dtype=torch.long)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=_SAMPLE_TOKENS,
                do_sample=False,
                pad_token_id=self.pad_id,
            )
        return str(self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip()

    def export(self, folder: Path, metrics: dict[str, float]) -> dict[str, Any]:
        base = Path(self.request.base_dir)
        self.model.save_pretrained(str(folder))
        config_path = folder / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
        adapter_config["base_model_name_or_path"] = self.request.base_artifact  # not this machine's path
        config_path.write_text(json.dumps(adapter_config, indent=2), encoding="utf-8")
        for path in sorted(base.iterdir()):
            if path.is_file() and path.name != "manifest.json" and not path.name.endswith(_WEIGHTS):
                shutil.copy2(path, folder / path.name)
        example = self.train_examples[0]
        self.reporter.log(
            LogSeverity.INFO, f"sample after training: {example.prompt!r} -> {self._sample(example.prompt)!r}"
        )
        return {
            "format": "peft-lora",
            "base_model": self.request.base_model,
            "base_artifact": self.request.base_artifact,
            "job_id": self.request.job_id,
            "lora": {
                "rank": self.settings.lora_rank,
                "alpha": self.settings.lora_alpha,
                "target_modules": list(self.targets),
            },
            "chat_template": self.chat,
            "max_length": self.settings.max_length,
            "metrics": metrics,
        }
