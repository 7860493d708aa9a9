"""The gRPC face of the NLP service: validates and converts protobuf, the runner does the work.

Defined behaviour for bad input (all INVALID_ARGUMENT with a BadRequest naming the field, unless said):
- `texts` empty; more than `max_texts_per_request` (256) texts: INVALID_ARGUMENT (reason
  TOO_MANY_TEXTS): the request's shape is wrong and retrying it unchanged cannot succeed, unlike
  RESOURCE_EXHAUSTED, which the batch queue sends when it is full (retry later).
- a text over `max_text_chars` (100,000 characters).
- an empty or whitespace-only text: refused by Embed and Classify (`texts[i]`: it has no meaning to
  embed); DetectLanguage answers "und" with score 0 for it, as for any text without a letter.
- a text longer than the model's context window (256 tokens for MiniLM) is truncated, never refused:
  the result says `truncated` and `token_count` is the window (special tokens included).
- `candidate_labels`: each non-empty and at most `max_label_chars`, no duplicates (after trimming
  spaces), at most `max_candidate_labels`; at least 2 unless `multi_label`.
- unknown model: NOT_FOUND (MODEL_NOT_FOUND); a model of another task (a classifier asked to embed,
  an embedding model asked to detect languages): FAILED_PRECONDITION (MODEL_WRONG_TASK).

Bulk streams (StreamEmbed, StreamClassify): the stream settings come from the first message; a later message that
changes one, or carries more than `max_texts_per_request` texts, ends the stream with INVALID_ARGUMENT (after the
answers to the messages before it). An empty or too long text is not an error of the stream: its result carries an
ItemError (TEXT_EMPTY, TEXT_TOO_LONG) and the stream goes on. A message without texts gets no answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from grpc import aio

from aisemble.common.v1 import common_pb2
from aisemble.errors import FieldViolation, InvalidArgumentError
from aisemble.nlp.v1 import nlp_service_pb2 as pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.resolution import AUTO
from aisemble.rpc.selection import MODEL_TRAILER, selection_message
from aisemble.rpc.server import request_context
from services.nlp.answers import BulkAnswer
from services.nlp.runner import NlpRunner, text_problem
from services.nlp.types import (
    Classification,
    ClassifyCall,
    DetectLanguageCall,
    EmbedCall,
    Encoded,
    ItemFailure,
    StreamClassifyCall,
    StreamEmbedCall,
    TextItem,
)

__all__ = ["MODEL_TRAILER", "NlpServicer"]

#: At most this many field violations are listed in one error.
_MAX_VIOLATIONS = 10


class NlpServicer(nlp_service_pb2_grpc.NlpServiceServicer):
    """Embed / Classify / DetectLanguage over one NlpRunner."""

    def __init__(self, runner: NlpRunner) -> None:
        self.runner = runner

    async def Embed(self, request: pb.EmbedRequest, context: aio.ServicerContext) -> pb.EmbedResponse:
        violations = self._model_required(request.model)
        texts = self._texts(request.texts, violations, allow_blank=False)
        self._raise(violations)
        normalize = request.normalize if request.HasField("normalize") else True
        answer = await self.runner.embed(EmbedCall(request.model, texts, normalize), request_context(context))
        context.set_trailing_metadata(((MODEL_TRAILER, answer.resolved.spec.name),))
        return pb.EmbedResponse(
            embeddings=[
                pb.EmbeddingResult(values=e.values.tolist(), truncated=e.truncated, token_count=e.token_count)
                for e in answer.embeddings
            ],
            dimensions=answer.dimensions,
            selection=selection_message(answer.resolved),
        )

    async def Classify(self, request: pb.ClassifyRequest, context: aio.ServicerContext) -> pb.ClassifyResponse:
        violations = self._model_required(request.model)
        texts = self._texts(request.texts, violations, allow_blank=False)
        labels = self._labels(request.candidate_labels, request.multi_label, violations)
        self._raise(violations)
        call = ClassifyCall(request.model, texts, labels, request.multi_label)
        answer = await self.runner.classify(call, request_context(context))
        context.set_trailing_metadata(((MODEL_TRAILER, answer.resolved.spec.name),))
        return pb.ClassifyResponse(
            results=[
                pb.ClassificationResult(
                    labels=[common_pb2.LabelScore(label=label, score=score) for label, score in r.labels],
                    truncated=r.truncated,
                    token_count=r.token_count,
                )
                for r in answer.results
            ],
            selection=selection_message(answer.resolved),
        )

    async def DetectLanguage(
        self, request: pb.DetectLanguageRequest, context: aio.ServicerContext
    ) -> pb.DetectLanguageResponse:
        violations: list[FieldViolation] = []
        texts = self._texts(request.texts, violations, allow_blank=True)
        top_k = request.top_k if request.HasField("top_k") else self.runner.limits.default_top_k
        if top_k < 1:
            violations.append(FieldViolation("top_k", f"must be >= 1 (got {top_k}); unset means 3"))
        self._raise(violations)
        call = DetectLanguageCall(request.model or AUTO, texts, top_k)
        answer = await self.runner.detect_language(call, request_context(context))
        context.set_trailing_metadata(((MODEL_TRAILER, answer.resolved.spec.name),))
        results = []
        for guess in answer.guesses:
            code, score = guess.best
            results.append(
                pb.LanguageDetectionResult(
                    language_code=code,
                    score=score,
                    alternatives=[pb.LanguageScore(language_code=c, score=s) for c, s in guess.languages[1:top_k]],
                    truncated=guess.truncated,
                    token_count=guess.token_count,
                )
            )
        return pb.DetectLanguageResponse(results=results, selection=selection_message(answer.resolved))

    async def StreamEmbed(
        self, request_iterator: AsyncIterator[pb.StreamEmbedRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.StreamEmbedResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        violations = self._model_required(first.model)
        inflight = self._inflight(first, violations)
        self._raise(violations)
        normalize = first.normalize if first.HasField("normalize") else True
        call = StreamEmbedCall(first.model, normalize, inflight)
        batches = self._batches(first, request_iterator, ("model", "normalize", "max_inflight_texts"))
        answers = self.runner.stream_embed(call, batches, request_context(context))
        async for response in _bulk_responses(answers, pb.StreamEmbedResponse, _fill_embedding):
            yield response

    async def StreamClassify(
        self, request_iterator: AsyncIterator[pb.StreamClassifyRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.StreamClassifyResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        violations = self._model_required(first.model)
        labels = self._labels(first.candidate_labels, first.multi_label, violations)
        inflight = self._inflight(first, violations)
        self._raise(violations)
        call = StreamClassifyCall(first.model, labels, first.multi_label, inflight)
        settings = ("model", "candidate_labels", "multi_label", "max_inflight_texts")
        batches = self._batches(first, request_iterator, settings)
        answers = self.runner.stream_classify(call, batches, request_context(context))
        async for response in _bulk_responses(answers, pb.StreamClassifyResponse, _fill_classification):
            yield response

    def _inflight(self, first: Any, violations: list[FieldViolation]) -> int:
        limits = self.runner.limits
        if not first.HasField("max_inflight_texts"):
            return limits.default_inflight_texts
        if not 1 <= first.max_inflight_texts <= limits.max_inflight_texts:
            violations.append(
                FieldViolation(
                    "max_inflight_texts",
                    f"must be between 1 and {limits.max_inflight_texts} (got {first.max_inflight_texts}); "
                    f"unset means {limits.default_inflight_texts}",
                )
            )
        return first.max_inflight_texts

    async def _batches(
        self, first: Any, rest: AsyncIterator[Any], settings: Sequence[str]
    ) -> AsyncIterator[tuple[TextItem, ...]]:
        """The texts of a bulk stream's messages (the first included), each message checked against the first's
        stream settings and the per-message text limit; messages without texts are skipped."""
        limit = self.runner.limits.max_texts_per_request
        number = 0
        message = first
        while True:
            problems: list[FieldViolation] = []
            if number:
                problems += [
                    FieldViolation(name, "is a stream setting: later messages leave it unset or repeat the first's")
                    for name in settings
                    if _changes(first, message, name)
                ]
            if len(message.items) > limit:
                problems.append(FieldViolation("items", f"has {len(message.items)} texts; at most {limit} per message"))
            if problems:
                raise InvalidArgumentError(
                    f"message {number} of the stream: " + "; ".join(f"{v.field}: {v.description}" for v in problems),
                    field_violations=problems,
                    reason="TOO_MANY_TEXTS" if any(v.field == "items" for v in problems) else "INVALID_ARGUMENT",
                    metadata={"message": str(number)},
                )
            if message.items:
                yield tuple(TextItem(item.id, item.text) for item in message.items)
            message = await anext(rest, None)
            if message is None:
                return
            number += 1

    # --- validation ---
    @staticmethod
    def _model_required(model: str) -> list[FieldViolation]:
        if not model:
            return [FieldViolation("model", "is required: a registry model name, or 'auto'")]
        return []

    def _texts(self, texts: Sequence[str], violations: list[FieldViolation], allow_blank: bool) -> tuple[str, ...]:
        limits = self.runner.limits
        if not texts:
            violations.append(FieldViolation("texts", "is required: at least one text"))
        elif len(texts) > limits.max_texts_per_request:
            violations.append(
                FieldViolation(
                    "texts",
                    f"has {len(texts)} texts; at most {limits.max_texts_per_request} per request (split the request)",
                )
            )
            return tuple(texts)  # not worth checking each one
        for index, text in enumerate(texts):
            problem = text_problem(text, limits.max_text_chars, allow_blank)
            if problem is not None:
                violations.append(FieldViolation(f"texts[{index}]", problem[1]))
        return tuple(texts)

    def _labels(self, labels: Sequence[str], multi_label: bool, violations: list[FieldViolation]) -> tuple[str, ...]:
        limits = self.runner.limits
        if len(labels) > limits.max_candidate_labels:
            violations.append(
                FieldViolation(
                    "candidate_labels", f"has {len(labels)} labels; at most {limits.max_candidate_labels} per request"
                )
            )
            return tuple(labels)
        cleaned: list[str] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(labels):
            label = raw.strip()
            where = f"candidate_labels[{index}]"
            if not label:
                violations.append(FieldViolation(where, "is empty: every candidate label needs a name"))
            elif len(label) > limits.max_label_chars:
                violations.append(
                    FieldViolation(where, f"is {len(label)} characters long; the limit is {limits.max_label_chars}")
                )
            elif label in seen:
                violations.append(
                    FieldViolation(where, f"repeats candidate_labels[{seen[label]}] ({label!r}): labels must be unique")
                )
            else:
                seen[label] = index
            cleaned.append(label)
        if len(labels) == 1 and not multi_label:
            violations.append(
                FieldViolation(
                    "candidate_labels",
                    "has one label: give at least 2 to choose between, or set multi_label to score it on its own",
                )
            )
        return tuple(cleaned)

    @staticmethod
    def _raise(violations: list[FieldViolation]) -> None:
        if not violations:
            return
        shown = violations[:_MAX_VIOLATIONS]
        more = len(violations) - len(shown)
        message = "; ".join(f"{v.field}: {v.description}" for v in shown)
        if more:
            message += f"; and {more} more"
        too_many = any(v.field == "texts" and v.description.startswith("has ") for v in shown)
        raise InvalidArgumentError(
            message, field_violations=shown, reason="TOO_MANY_TEXTS" if too_many else "INVALID_ARGUMENT"
        )


def _changes(first: Any, later: Any, name: str) -> bool:
    """Whether a later message of a stream sets a stream setting to other than the first message's (an empty
    model or list, a false bool, an unset optional field: not set)."""
    field = first.DESCRIPTOR.fields_by_name[name]
    if field.has_presence and not field.is_repeated:
        return bool(later.HasField(name)) and (not first.HasField(name) or getattr(later, name) != getattr(first, name))
    value = getattr(later, name)
    return bool(value) and value != getattr(first, name)


async def _bulk_responses(
    answers: AsyncIterator[BulkAnswer], response_type: Any, fill: Callable[[Any, Any], None]
) -> AsyncIterator[Any]:
    """One response per answered batch: each text's result (`fill` writes a success) or its ItemError, with its
    id; the first response names the model."""
    first = True
    async for answer in answers:
        response = response_type()
        for item_id, outcome in zip(answer.ids, answer.outcomes, strict=True):
            result = response.results.add(id=item_id)
            if isinstance(outcome, ItemFailure):
                result.error.CopyFrom(
                    common_pb2.ItemError(code=int(outcome.code), reason=outcome.reason, message=outcome.message)
                )
            else:
                fill(result, outcome)
        if isinstance(response, pb.StreamEmbedResponse):
            response.dimensions = answer.dimensions
        if first:
            response.selection.CopyFrom(selection_message(answer.resolved))
            first = False
        yield response


def _fill_embedding(result: pb.StreamEmbedResult, encoded: Encoded) -> None:
    result.embedding.values.extend(encoded.values.tolist())
    result.embedding.truncated, result.embedding.token_count = encoded.truncated, encoded.token_count


def _fill_classification(result: pb.StreamClassifyResult, classification: Classification) -> None:
    labels = classification.labels
    result.classification.labels.extend(common_pb2.LabelScore(label=label, score=score) for label, score in labels)
    result.classification.truncated = classification.truncated
    result.classification.token_count = classification.token_count
