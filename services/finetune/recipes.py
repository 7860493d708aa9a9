"""Model store recipes that our own fine-tuning trainers build from the datasets shipped in data/: the
`domain-classifier` (the learned router, in every store) and the `smollm2-135m-code` LoRA adapter (opt-in).

A recipe runs the same trainer and the same training loop as a fine-tuning job (services/finetune/trainers),
in the `aisemble models prepare` process, with the job's default hyper-parameters and validation split and
a fixed seed, so a store built twice from the same data holds the same model. The classifier's held-out
accuracy per language (data/domain_classification_heldout.jsonl, never trained on) is measured on the
exported ONNX graph that the NLP service serves, and written into the artifact's manifest.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aisemble.store.errors import RecipeError
from aisemble.store.recipe import BuildContext, Recipe
from services.finetune.types import Evaluation, LogSeverity, Progress, Task

__all__ = [
    "CLASSIFIER_DATASET",
    "CLASSIFIER_HELD_OUT",
    "CODE_ADAPTER",
    "CODE_ADAPTER_RECIPE",
    "CODE_DATASET",
    "DOMAIN_CLASSIFIER",
    "DOMAIN_CLASSIFIER_RECIPE",
    "held_out_summary",
]

logger = logging.getLogger("aisemble.store.recipes")

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
DOMAIN_CLASSIFIER = "domain-classifier"
CLASSIFIER_DATASET = DATA_DIR / "domain_classification.jsonl"
CLASSIFIER_HELD_OUT = DATA_DIR / "domain_classification_heldout.jsonl"
CODE_ADAPTER = "smollm2-135m-code"
CODE_DATASET = DATA_DIR / "code_assistant.jsonl"
_VALIDATION_SPLIT = 0.1  # the fine-tuning service's default


class _StoreReporter:
    """The training loop's reports as a progress bar over the steps (when bars are shown) and log lines."""

    def __init__(self, name: str, progress: bool) -> None:
        from tqdm import tqdm

        self.name = name
        self.bar = tqdm(desc=f"train {name}", unit="step", disable=not progress, leave=False)

    def progress(self, progress: Progress) -> None:
        self.bar.total = progress.total_steps
        self.bar.n = progress.step
        if progress.train_loss is not None:
            self.bar.set_postfix(epoch=f"{progress.epoch}/{progress.total_epochs}", loss=f"{progress.train_loss:.3f}")
        self.bar.refresh()

    def evaluation(self, evaluation: Evaluation) -> None:
        accuracy = "" if evaluation.validation_accuracy is None else f", accuracy {evaluation.validation_accuracy:.3f}"
        logger.debug(
            "%s: epoch %d validation loss %.4f%s", self.name, evaluation.epoch, evaluation.validation_loss, accuracy
        )

    def log(self, severity: LogSeverity, message: str) -> None:
        logger.log(logging.WARNING if severity == LogSeverity.WARNING else logging.INFO, "%s: %s", self.name, message)

    def checkpoint(self, step: int) -> None:
        """Recipes do not resume: a killed prepare builds again."""

    def close(self) -> None:
        self.bar.close()


@dataclass(frozen=True)
class _Job:
    """One training run of a recipe: which trainer, on what base, with which examples."""

    name: str
    task: Task
    base_artifact: str
    dataset: Path
    labels: tuple[str, ...] = ()
    validation_split: float = _VALIDATION_SPLIT
    hyperparameters: Mapping[str, Any] | None = None


def _train(ctx: BuildContext, job: _Job) -> dict[str, Any]:
    """Run the job's trainer through the one training loop; its output files go into the artifact."""
    from services.finetune.examples import parse_jsonl, split_examples, write_examples
    from services.finetune.hyperparameters import DEFAULTS
    from services.finetune.trainers.base import OUTPUT_DIR, WorkerRequest, run_training, trainer_for
    from services.finetune.workspace import TRAIN_FILE, VALIDATION_FILE

    examples = parse_jsonl(job.dataset.read_bytes(), job.task, field=job.dataset.name)
    settings = {**DEFAULTS[job.task].to_dict(), **(job.hyperparameters or {})}
    train, validation = split_examples(examples, job.validation_split, int(settings["seed"]))
    reporter = _StoreReporter(job.name, ctx.progress)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"aisemble-recipe-{job.name}-") as scratch:
        job_dir = Path(scratch)
        write_examples(job_dir / TRAIN_FILE, train)
        write_examples(job_dir / VALIDATION_FILE, validation)
        request = WorkerRequest(
            job_id=f"recipe-{job.name}",
            task=job.task.value,
            job_dir=str(job_dir),
            base_model=job.base_artifact,
            base_artifact=job.base_artifact,
            base_dir=str(ctx.artifacts[job.base_artifact]),
            hyperparameters=settings,
            labels=job.labels,
            checkpoint_interval_s=float("inf"),
        )
        try:
            trainer = trainer_for(request, reporter)
            result = run_training(trainer, reporter)
        finally:
            reporter.close()
        ctx.copy_tree(job_dir / OUTPUT_DIR, ".")
    info: dict[str, Any] = dict(result["info"])
    info.pop("job_id", None)
    info["recipe"] = {
        "dataset": f"data/{job.dataset.name}",
        "training_examples": len(train),
        "validation_examples": len(validation),
        "hyperparameters": settings,
        "train_seconds": round(time.monotonic() - started, 1),
    }
    return info


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _labels(path: Path) -> tuple[str, ...]:
    return tuple(sorted({str(row["label"]) for row in _rows(path)}))


def _onnx_predictions(folder: Path, texts: Sequence[str]) -> list[int]:
    """The exported graph's top label per text, tokenised as the NLP service does (its tokenizer.json)."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0, pad_token="[PAD]")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    predicted: list[int] = []
    for start in range(0, len(texts), 32):
        encodings = tokenizer.encode_batch(list(texts[start : start + 32]))
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        predicted += [int(i) for i in session.run(["logits"], feed)[0].argmax(-1)]
    return predicted


def _held_out_accuracy(folder: Path, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy on the held-out file, overall and per language, with the count of texts of each."""
    rows = _rows(CLASSIFIER_HELD_OUT)
    predicted = _onnx_predictions(folder, [str(r["text"]) for r in rows])
    per: dict[str, list[bool]] = {}
    for row, index in zip(rows, predicted, strict=True):
        correct = labels[index] == row["label"]
        per.setdefault("all", []).append(correct)
        per.setdefault(str(row.get("lang", "und")), []).append(correct)
    return {
        "file": f"data/{CLASSIFIER_HELD_OUT.name}",
        "accuracy": {lang: round(sum(hits) / len(hits), 4) for lang, hits in sorted(per.items())},
        "texts": {lang: len(hits) for lang, hits in sorted(per.items())},
    }


def held_out_summary(info: Mapping[str, Any]) -> str:
    """One line of a classifier manifest's held-out accuracy: "held-out accuracy en 0.958, ja 0.938 (96 texts)"."""
    held_out = info.get("held_out") or {}
    accuracy: Mapping[str, float] = held_out.get("accuracy") or {}
    if not accuracy:
        return ""
    languages = ", ".join(f"{lang} {value:.3f}" for lang, value in accuracy.items() if lang != "all")
    total = (held_out.get("texts") or {}).get("all", 0)
    return f"held-out accuracy {languages} ({total} texts, all {accuracy.get('all', 0):.3f})"


def _build_domain_classifier(ctx: BuildContext) -> dict[str, Any]:
    labels = _labels(CLASSIFIER_DATASET)
    info = _train(ctx, _Job(DOMAIN_CLASSIFIER, Task.TEXT_CLASSIFICATION, "minilm-l6", CLASSIFIER_DATASET, labels))
    info["held_out"] = _held_out_accuracy(ctx.out_dir, labels)
    logger.info("%s: %s", DOMAIN_CLASSIFIER, held_out_summary(info))
    return info


DOMAIN_CLASSIFIER_RECIPE = Recipe(
    name=DOMAIN_CLASSIFIER,
    version=2,
    build=_build_domain_classifier,
    tools=("torch", "transformers", "tokenizers", "onnx", "onnxruntime-gpu"),
    requires=("minilm-l6",),
    inputs=(CLASSIFIER_DATASET, CLASSIFIER_HELD_OUT),
    summary=held_out_summary,
    description="the learned router: MiniLM-L6 fine-tuned on data/domain_classification.jsonl (6 domains, en + ja)",
)


def _build_code_adapter(ctx: BuildContext) -> dict[str, Any]:
    job = _Job(
        CODE_ADAPTER,
        Task.CAUSAL_LM,
        "smollm2-135m-instruct",
        CODE_DATASET,
        validation_split=0.0,
        hyperparameters=_CODE_SETTINGS,
    )
    info = _train(ctx, job)
    if "adapter_model.safetensors" not in {p.name for p in ctx.out_dir.iterdir()}:
        raise RecipeError(f"{CODE_ADAPTER}: the trainer wrote no adapter")
    return info


def _code_summary(info: Mapping[str, Any]) -> str:
    recipe = info.get("recipe") or {}
    loss = (info.get("metrics") or {}).get("train_loss")
    trained = f"LoRA on {recipe.get('training_examples', '?')} code prompt/answer pairs"
    return trained + (f", final train loss {loss:.3f}" if isinstance(loss, int | float) else "")


#: A few epochs at the LoRA test's learning rate: the adapter learns our answers' style, not new facts.
_CODE_SETTINGS = {"learning_rate": 2e-3, "epochs": 3, "batch_size": 4, "max_length": 128}

CODE_ADAPTER_RECIPE = Recipe(
    name=CODE_ADAPTER,
    version=1,
    build=_build_code_adapter,
    tools=("torch", "transformers", "peft", "tokenizers"),
    requires=("smollm2-135m-instruct",),
    inputs=(CODE_DATASET,),
    summary=_code_summary,
    description="SmolLM2-135M-Instruct + a LoRA adapter trained on data/code_assistant.jsonl (the `code` domain)",
)
