"""Runs NLP calls: resolves the model, checks it fits the call, batches texts across requests per model."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from aisemble.config.models import ModelSpec
from aisemble.config.schema import ConfigError
from aisemble.errors import Code, InvalidArgumentError, ResourceExhaustedError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.batching import BatchingConfig, DynamicBatcher
from aisemble.hosting.host import ModelHost
from aisemble.hosting.settings import ModelSettings, setting, settings_error, unservable
from aisemble.hosting.streaming import in_order
from aisemble.resolution import Resolved, Rpc, resolve_hosted
from services.nlp.answers import BulkAnswer, ClassifyAnswer, DetectLanguageAnswer, EmbedAnswer
from services.nlp.types import (
    Classification,
    ClassifyCall,
    DetectLanguageCall,
    EmbedCall,
    Encoded,
    ItemFailure,
    LanguageGuess,
    LanguageQuery,
    StreamClassifyCall,
    StreamEmbedCall,
    TextItem,
)
from services.nlp.zero_shot import ZeroShotSettings, label_scores, logit_scores, ranked

__all__ = ["BatchingSettings", "NlpLimits", "NlpRunner", "Resolved", "text_problem"]

EMBEDDING = "embedding"
CLASSIFICATION = "text-classification"
LANGUAGE_DETECTION = "language-detection"


@dataclass(frozen=True)
class NlpLimits:
    """Service-wide limits and batching defaults (a model's registry params may override the batching: see
    BatchingSettings; an embedding model's zero-shot prompts: ZeroShotSettings)."""

    max_texts_per_request: int = 256
    max_text_chars: int = 100_000
    max_candidate_labels: int = 64
    max_label_chars: int = 256
    default_top_k: int = 3
    #: Bulk streams: the texts a stream may hold at once (received, not yet answered), by default and at most.
    default_inflight_texts: int = 512
    max_inflight_texts: int = 4096
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    label_cache_size: int = 4096
    #: The model "auto" (or an empty model in DetectLanguage) means, per task, when it is hosted and ready.
    default_models: Mapping[str, str] = field(
        default_factory=lambda: {EMBEDDING: "minilm-l6", LANGUAGE_DETECTION: "langid"}
    )


def text_problem(text: str, max_chars: int, allow_blank: bool) -> tuple[str, str] | None:
    """Why a text cannot be analysed, as (reason, description of the text), or None when it can."""
    if not allow_blank and not text.strip():
        return "TEXT_EMPTY", "is empty or only whitespace: there is nothing to analyse"
    if len(text) > max_chars:
        return "TEXT_TOO_LONG", f"is {len(text)} characters long; the limit is {max_chars}"
    return None


#: How long a bulk stream waits before it offers a batch again to a model whose queue is full.
_QUEUE_FULL_PAUSE_S = 0.01


@dataclass(frozen=True)
class BatchingSettings(ModelSettings):
    """A model's batching of texts across requests, from its registry params; a key not given keeps the service's
    default (NlpLimits.batching)."""

    max_batch_size: int | None = setting(None, minimum=1)
    max_wait_ms: float | None = setting(None, minimum=0, maximum=10_000)
    max_queued_texts: int | None = setting(None, minimum=1)

    def config(self, defaults: BatchingConfig) -> BatchingConfig:
        """The service's defaults with these settings applied (the caller checks max_queued_texts against them)."""
        return replace(
            defaults,
            max_batch_size=defaults.max_batch_size if self.max_batch_size is None else self.max_batch_size,
            max_wait_s=defaults.max_wait_s if self.max_wait_ms is None else self.max_wait_ms / 1000.0,
            max_queued=defaults.max_queued if self.max_queued_texts is None else self.max_queued_texts,
        )


@dataclass
class _ModelRuntime:
    """What the runner keeps per hosted model: settings from its spec, its batcher, its label-prompt vectors."""

    spec: ModelSpec
    batching: BatchingConfig
    zero_shot: ZeroShotSettings | None
    batcher: DynamicBatcher[Any, Any] | None = None
    labels_backend: Backend | None = None  # the backend the cached label vectors came from
    label_vectors: collections.OrderedDict[str, np.ndarray] = field(default_factory=collections.OrderedDict)


class NlpRunner:
    """The transport-neutral core of the NLP service (the servicer only converts protobuf).

    Models may come and go at run time (the registry follower adds, replaces and removes them in the
    ModelHost): per-model settings and batchers follow the current spec, a batcher whose settings
    changed is drained and replaced, and cached label vectors are dropped when the backend changes.
    """

    def __init__(self, host: ModelHost, limits: NlpLimits | None = None) -> None:
        self.host = host
        self.limits = limits or NlpLimits()
        self._models: dict[str, _ModelRuntime] = {}
        self._retiring: dict[asyncio.Task[None], DynamicBatcher[Any, Any]] = {}
        for model in host.models.values():  # refuse bad settings at start, naming the model
            self._models[model.spec.name] = self._runtime(model.spec)

    def _runtime(self, spec: ModelSpec) -> _ModelRuntime:
        """The settings of a spec, parsed once per spec; ConfigError (naming model and params) when refused."""
        settings = BatchingSettings.from_spec(spec)
        defaults = self.limits.batching
        queued = settings.max_queued_texts or defaults.max_queued  # (both are >= 1 when set)
        batch = settings.max_batch_size or defaults.max_batch_size
        carried = self.limits.max_texts_per_request
        if queued < carried:
            raise settings_error(
                spec.name, [("max_queued_texts", f"{queued} is below the {carried} texts a request may carry")]
            )
        if queued < batch:
            raise settings_error(spec.name, [("max_queued_texts", f"{queued} is below max_batch_size ({batch})")])
        zero_shot = ZeroShotSettings.from_spec(spec) if spec.task == EMBEDDING else None
        return _ModelRuntime(spec, settings.config(defaults), zero_shot)

    def _current(self, spec: ModelSpec) -> _ModelRuntime:
        """The runtime state of a model for its current spec (made or refreshed when the spec changed)."""
        for name in [n for n in self._models if n not in self.host.models]:
            self._retire(self._models.pop(name).batcher)  # a model removed at run time
        state = self._models.get(spec.name)
        if state is not None and (state.spec is spec or state.spec == spec):
            return state
        try:
            fresh = self._runtime(spec)
        except ConfigError as exc:
            raise unservable(exc) from None
        if state is not None:
            if state.batching == fresh.batching:
                fresh.batcher = state.batcher  # same batching: keep the queue (the backend is looked up per call)
            else:
                self._retire(state.batcher)
        self._models[spec.name] = fresh
        return fresh

    def _retire(self, batcher: DynamicBatcher[Any, Any] | None) -> None:
        if batcher is None:
            return
        task = asyncio.get_running_loop().create_task(batcher.drain())
        self._retiring[task] = batcher
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    # --- which model ---
    def _resolve(self, model: str, rpc: str, zero_shot: bool = False) -> Resolved:
        """The named model (checked against the RPC's tasks), or for 'auto' this service's default for the task."""
        return resolve_hosted(
            self.host, model, rpc, service="nlp", zero_shot=zero_shot, preferred=self.limits.default_models
        )

    def batchers(self) -> dict[str, DynamicBatcher[Any, Any]]:
        """The batchers made so far, by model (for the metrics)."""
        return {name: state.batcher for name, state in list(self._models.items()) if state.batcher is not None}

    def batcher(self, model: str) -> DynamicBatcher[Any, Any]:
        """The batcher of a hosted model (made on first use, on the running event loop)."""
        state = self._current(self.host.spec(model))
        if state.batcher is None:

            def run_batch(items: list[Any]) -> Sequence[Any]:
                # The backend is looked up per call: a replaced model is used at once, a removed one refuses.
                _spec, backend = self.host.get(model)
                return backend.run(items, RequestContext())  # type: ignore[no-any-return]

            state.batcher = DynamicBatcher(model, run_batch, state.batching, unit="texts")
        return state.batcher

    # --- the three calls ---
    async def embed(self, call: EmbedCall, ctx: RequestContext) -> EmbedAnswer:
        """One vector per text (unit length when normalize), batched with other requests for the model."""
        resolved = self._resolve(call.model, Rpc.EMBED)
        encoded: list[Encoded] = await self.batcher(resolved.spec.name).submit(list(call.texts), ctx)
        if call.normalize:
            encoded = [replace(e, values=e.values / max(float(np.linalg.norm(e.values)), 1e-12)) for e in encoded]
        return EmbedAnswer(resolved, tuple(encoded))

    async def classify(self, call: ClassifyCall, ctx: RequestContext) -> ClassifyAnswer:
        """Labels with scores per text: a classifier's own labels, or zero-shot over candidate_labels."""
        candidate_labels = call.candidate_labels
        resolved = self._resolve(call.model, Rpc.CLASSIFY, zero_shot=bool(candidate_labels))
        spec = resolved.spec
        labels = self._labels_of(resolved, candidate_labels)
        if spec.task == CLASSIFICATION:
            encoded = await self.batcher(spec.name).submit(list(call.texts), ctx)
            scores = logit_scores(np.stack([e.values for e in encoded]), call.multi_label)
        else:
            state = self._current(spec)
            assert state.zero_shot is not None  # every embedding model has zero-shot settings
            encoded, label_vectors = await self._zero_shot_vectors(resolved, state, call.texts, candidate_labels, ctx)
            text_vectors = np.stack([e.values for e in encoded])
            scores = label_scores(text_vectors, label_vectors, state.zero_shot, call.multi_label)
        results = tuple(
            Classification(ranked(labels, scores[i]), token_count=e.token_count, truncated=e.truncated)
            for i, e in enumerate(encoded)
        )
        return ClassifyAnswer(resolved, results)

    @staticmethod
    def _labels_of(resolved: Resolved, candidate_labels: Sequence[str]) -> Sequence[str]:
        """The labels a classification chooses among: a classifier's own, or the candidates (embedding models);
        INVALID_ARGUMENT when the call's candidate labels do not suit the model."""
        spec = resolved.spec
        if spec.task == CLASSIFICATION:
            labels: Sequence[str] = getattr(resolved.backend, "labels", ())
            if candidate_labels:
                raise InvalidArgumentError.for_field(
                    "candidate_labels",
                    f"model '{spec.name}' is a trained classifier over its own labels ({', '.join(labels)}) and does "
                    "not classify zero-shot: leave candidate_labels empty, or use an embedding model",
                )
            return labels
        if not candidate_labels:
            raise InvalidArgumentError.for_field(
                "candidate_labels",
                f"model '{spec.name}' is an embedding model, which classifies zero-shot only: "
                "give the candidate_labels to choose from",
            )
        return candidate_labels

    async def _zero_shot_vectors(
        self,
        resolved: Resolved,
        state: _ModelRuntime,
        texts: Sequence[str],
        labels: Sequence[str],
        ctx: RequestContext,
    ) -> tuple[list[Encoded], np.ndarray]:
        """The texts' encodings and the label prompts' vectors (cached per model, embedded in the same batch)."""
        assert state.zero_shot is not None
        if state.labels_backend is not resolved.backend:  # a reloaded model embeds differently
            state.label_vectors.clear()
            state.labels_backend = resolved.backend
        cache = state.label_vectors
        prompts = [state.zero_shot.prompt(label) for label in labels]
        known = {p: cache[p] for p in prompts if p in cache}
        missing = [p for p in dict.fromkeys(prompts) if p not in known]
        encoded: list[Encoded] = await self.batcher(resolved.spec.name).submit([*texts, *missing], ctx)
        for prompt, e in zip(missing, encoded[len(texts) :], strict=True):
            known[prompt] = e.values
            cache[prompt] = e.values
        for prompt in prompts:
            if prompt in cache:
                cache.move_to_end(prompt)
        while len(cache) > self.limits.label_cache_size:
            cache.popitem(last=False)
        return encoded[: len(texts)], np.stack([known[p] for p in prompts])

    async def detect_language(self, call: DetectLanguageCall, ctx: RequestContext) -> DetectLanguageAnswer:
        """The languages of each text, best first, at most top_k (capped at the model's language count)."""
        resolved = self._resolve(call.model, Rpc.DETECT_LANGUAGE)
        languages = len(getattr(resolved.backend, "languages", ())) or call.top_k
        k = max(1, min(call.top_k, languages))
        queries = [LanguageQuery(text, k) for text in call.texts]
        guesses: list[LanguageGuess] = await self.batcher(resolved.spec.name).submit(queries, ctx)
        return DetectLanguageAnswer(resolved, tuple(guesses))

    # --- bulk streams ---
    async def stream_embed(
        self, call: StreamEmbedCall, batches: AsyncIterator[Sequence[TextItem]], ctx: RequestContext
    ) -> AsyncIterator[BulkAnswer]:
        """Each batch's vectors (or per-text failures), in the order the batches came, at most
        call.max_inflight_texts texts held at once; the texts share the model's batcher with every caller."""
        resolved = self._resolve(call.model, Rpc.STREAM_EMBED)

        async def embed(texts: tuple[str, ...]) -> Sequence[Encoded]:
            answer = await self.embed(EmbedCall(resolved.spec.name, texts, call.normalize), ctx)
            return answer.embeddings

        async for answer in self._bulk(resolved, batches, embed, call.max_inflight_texts, ctx):
            yield answer

    async def stream_classify(
        self, call: StreamClassifyCall, batches: AsyncIterator[Sequence[TextItem]], ctx: RequestContext
    ) -> AsyncIterator[BulkAnswer]:
        """Each batch's classifications (or per-text failures), as stream_embed."""
        labels = call.candidate_labels
        resolved = self._resolve(call.model, Rpc.STREAM_CLASSIFY, zero_shot=bool(labels))
        self._labels_of(resolved, labels)  # a stream that cannot classify fails before it reads on

        async def classify(texts: tuple[str, ...]) -> Sequence[Classification]:
            answer = await self.classify(ClassifyCall(resolved.spec.name, texts, labels, call.multi_label), ctx)
            return answer.results

        async for answer in self._bulk(resolved, batches, classify, call.max_inflight_texts, ctx):
            yield answer

    def _bulk(
        self,
        resolved: Resolved,
        batches: AsyncIterator[Sequence[TextItem]],
        run: Callable[[tuple[str, ...]], Awaitable[Sequence[Encoded | Classification]]],
        max_inflight: int,
        ctx: RequestContext,
    ) -> AsyncIterator[BulkAnswer]:
        """A bulk stream's batches through `run` (the unary path, so the batcher is shared), in order."""

        async def one_batch(items: Sequence[TextItem]) -> BulkAnswer:
            outcomes: list[Encoded | Classification | ItemFailure | None] = [None] * len(items)
            valid: list[int] = []
            for index, item in enumerate(items):
                problem = text_problem(item.text, self.limits.max_text_chars, allow_blank=False)
                if problem is None:
                    valid.append(index)
                else:
                    reason, description = problem
                    outcomes[index] = ItemFailure(Code.INVALID_ARGUMENT, reason, f"items[{index}].text {description}")
            if valid:
                texts = tuple(items[i].text for i in valid)
                while True:  # a stream waits for room in the model's queue rather than failing its texts
                    try:
                        results = await run(texts)
                        break
                    except ResourceExhaustedError as exc:
                        if exc.reason != "QUEUE_FULL":
                            raise
                    ctx.check()
                    await asyncio.sleep(_QUEUE_FULL_PAUSE_S)
                for index, result in zip(valid, results, strict=True):
                    outcomes[index] = result
            assert all(outcome is not None for outcome in outcomes)
            return BulkAnswer(resolved, tuple(item.id for item in items), tuple(outcomes))  # type: ignore[arg-type]

        return in_order(batches, one_batch, len, max_inflight)

    async def close(self) -> None:
        """Stop the batchers (queued texts fail with UNAVAILABLE) and their threads."""
        states, self._models = list(self._models.values()), {}
        for state in states:
            if state.batcher is not None:
                await state.batcher.close()
        for task, batcher in list(self._retiring.items()):
            task.cancel()
            await batcher.close()
