"""The decoding loop shared by local text-generation backends: tokenise, prefill, sample, detokenise, stop."""

from __future__ import annotations

import abc
import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aisemble.errors import FailedPreconditionError, FieldViolation, InvalidArgumentError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.settings import ModelSettings, setting
from services.llm.scheduler import BatchLimits, ContinuousBatcher
from services.llm.sequence import SequenceOutput
from services.llm.types import FinishReason, GenerationChunk, GenerationRequest

__all__ = ["ContinuousBatchingSettings", "LocalDecoderBackend"]

_DEFAULT = BatchLimits()


@dataclass(frozen=True)
class ContinuousBatchingSettings(ModelSettings):
    """A local model's continuous batching, from its registry params (BatchLimits says what each bound does)."""

    continuous_batching: bool = setting(True)
    max_batch_size: int = setting(_DEFAULT.max_batch_size, minimum=1)
    max_waiting: int = setting(_DEFAULT.max_waiting, minimum=0)
    max_tokens_in_flight: int = setting(_DEFAULT.max_tokens_in_flight, minimum=1)
    max_prefill_tokens: int = setting(_DEFAULT.max_prefill_tokens, minimum=1)
    gather_ms: float = setting(_DEFAULT.gather_gap_s * 1000, minimum=0)
    gather_max_ms: float = setting(_DEFAULT.gather_max_s * 1000, minimum=0)

    def batch_limits(self) -> BatchLimits:
        """The batcher's bounds."""
        return BatchLimits(
            max_batch_size=self.max_batch_size,
            max_waiting=self.max_waiting,
            max_tokens_in_flight=self.max_tokens_in_flight,
            max_prefill_tokens=self.max_prefill_tokens,
            gather_gap_s=self.gather_ms / 1000,
            gather_max_s=self.gather_max_ms / 1000,
        )


class LocalDecoderBackend(Backend, abc.ABC):
    """A causal LM run step by step in this process; subclasses supply the forward pass only.

    With continuous batching (the default; params.continuous_batching: false turns it off; its bounds
    are ContinuousBatchingSettings, read once at load), every concurrent sequence joins one
    ContinuousBatcher, which decodes them together; subclasses then supply prefill / extend /
    decode_batch / kv_join / kv_select. Without it, each request runs its own loop over
    `_prefill(ids)` and `_decode(token, state)`. Either way cancellation and the deadline are checked
    before every step, so a cancelled request stops within one decoding step.
    `active_sequences` and `tokens_generated` count what the backend computes (info() reports them, the
    LLM service exports them to Prometheus): they show compute start and stop.
    """

    tasks = frozenset({"text-generation"})
    #: This backend's settings in the registry entry's params.
    settings_class: ClassVar[type[ContinuousBatchingSettings]] = ContinuousBatchingSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tokenizer: Any = None
        self.context_window = 0
        self.eos_token_ids: frozenset[int] = frozenset()
        self.generation_defaults: dict[str, float] = {}
        self.settings = self.settings_class()
        self.tokens_generated = 0  # all time
        self.active_sequences = 0  # generations running now (in the batcher or alone)
        self._counter_lock = threading.Lock()
        self.batcher: ContinuousBatcher | None = None

    # --- to implement ---
    @abc.abstractmethod
    def _load_model(self, path: Path) -> None:
        """Load the network from the model store folder."""

    @abc.abstractmethod
    def _prefill(self, input_ids: list[int]) -> tuple[np.ndarray, Any]:
        """Run the prompt; return the logits of the next token and the cache state."""

    @abc.abstractmethod
    def _decode(self, token_id: int, state: Any) -> tuple[np.ndarray, Any]:
        """Feed one token; return the logits of the next token and the new state."""

    @staticmethod
    def _left_padded(prompts: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """input_ids, attention_mask and position_ids of prompts left-padded to the longest (batched prefill)."""
        longest = max(len(p) for p in prompts)
        input_ids = np.zeros((len(prompts), longest), dtype=np.int64)
        attention_mask = np.zeros((len(prompts), longest), dtype=np.int64)
        for row, prompt in enumerate(prompts):
            input_ids[row, longest - len(prompt) :] = prompt
            attention_mask[row, longest - len(prompt) :] = 1
        position_ids = np.maximum(attention_mask.cumsum(axis=1) - 1, 0)
        return input_ids, attention_mask, position_ids

    # --- Backend ---
    def load(self) -> None:
        from transformers import AutoTokenizer

        self.settings = self.settings_class.for_serving(self.spec)  # refused settings: before any weight is read
        if self.store is None:
            raise FailedPreconditionError(f"model '{self.spec.name}' needs the model store")
        path = self.store.require(self.spec.model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        config = json.loads((path / "config.json").read_text())
        self.context_window = self.spec.max_tokens or int(config.get("max_position_embeddings", 2048))
        self.eos_token_ids = frozenset(self._eos_ids(path, config))
        self.generation_defaults = self._read_generation_defaults(path)
        self._load_model(path)
        # Warm up: the first forward pass allocates and picks kernels.
        logits, _state = self._prefill(self.tokenizer("Hello")["input_ids"])
        if logits.shape[-1] < len(self.tokenizer) - 1024:
            raise FailedPreconditionError(f"model '{self.spec.name}': logits size does not match the tokenizer")
        if self.settings.continuous_batching:
            self.batcher = ContinuousBatcher(self, self.settings.batch_limits())  # type: ignore[arg-type]

    def _batch_limits(self, params: Mapping[str, Any]) -> BatchLimits:
        """The batcher's bounds in a params mapping, parsed as load() parses the entry's (FAILED_PRECONDITION,
        MODEL_CONFIG_INVALID, naming each bad `params.<key>`)."""
        return self.settings_class.for_serving(self.spec, params).batch_limits()

    def _eos_ids(self, path: Path, config: dict[str, Any]) -> set[int]:
        ids: set[int] = set()
        sources = [config.get("eos_token_id")]
        generation = path / "generation_config.json"
        if generation.exists():
            sources.append(json.loads(generation.read_text()).get("eos_token_id"))
        sources.append(self.tokenizer.eos_token_id)
        for source in sources:
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list):
                ids.update(int(i) for i in source)
        return ids

    @staticmethod
    def _read_generation_defaults(path: Path) -> dict[str, float]:
        generation = path / "generation_config.json"
        if not generation.exists():
            return {}
        values = json.loads(generation.read_text())
        return {
            k: float(values[k]) for k in ("temperature", "top_p", "top_k") if isinstance(values.get(k), int | float)
        }

    def info(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "provider": self.provider,
            "model": self.spec.name,
            "context_window": self.context_window,
            "generation_defaults": self.generation_defaults,
            "active_sequences": self.active_sequences,
            "tokens_generated": self.tokens_generated,
        }
        if self.batcher is not None:
            facts["continuous_batching"] = {
                "max_batch_size": self.batcher.limits.max_batch_size,
                "running": self.batcher.running,
                "waiting": self.batcher.waiting,
            }
        return facts

    def cleanup(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    def encode(self, request: GenerationRequest) -> list[int]:
        """Token ids of the prompt, with the chat template applied for chat requests."""
        if request.is_chat:
            text = self.tokenizer.apply_chat_template(
                [{"role": t.role, "content": t.content} for t in request.messages],
                add_generation_prompt=True,
                tokenize=False,
            )
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(request.prompt)["input_ids"])

    def check_fits(self, prompt_tokens: int, max_output_tokens: int) -> None:
        """INVALID_ARGUMENT, with the token counts, when prompt + output cannot fit the context window."""
        if prompt_tokens + max_output_tokens <= self.context_window:
            return
        raise InvalidArgumentError(
            f"the prompt is {prompt_tokens} tokens; with max_output_tokens {max_output_tokens} it exceeds "
            f"the context window of {self.context_window} tokens of model '{self.spec.name}'",
            reason="PROMPT_TOO_LONG",
            metadata={
                "prompt_tokens": str(prompt_tokens),
                "max_output_tokens": str(max_output_tokens),
                "context_window": str(self.context_window),
            },
            field_violations=[
                FieldViolation(
                    "prompt",
                    f"{prompt_tokens} prompt tokens + {max_output_tokens} output tokens > {self.context_window}",
                )
            ],
        )

    def run(self, request: GenerationRequest, ctx: RequestContext) -> GenerationChunk:
        """The whole generation as one chunk."""
        whole = GenerationChunk()
        for chunk in self.stream(request, ctx):
            whole.text += chunk.text
            whole.token_count += chunk.token_count
            whole.logprob_sum += chunk.logprob_sum
            whole.token_ids += chunk.token_ids
            if chunk.finish_reason is not None:
                whole.finish_reason = chunk.finish_reason
                whole.prompt_tokens, whole.output_tokens = chunk.prompt_tokens, chunk.output_tokens
        return whole

    @property
    def batched(self) -> bool:
        """True when generations join the continuous batcher: `stream_batched` serves them on the event loop
        and the batcher is their admission (the runner neither admits them nor parks a thread per stream)."""
        return self.batcher is not None

    async def stream_batched(self, request: GenerationRequest, ctx: RequestContext) -> AsyncIterator[GenerationChunk]:
        """The generation's chunks, handed by the decoding thread straight to this coroutine's queue (no
        thread per stream). Leaving early (the caller went away) marks `ctx` cancelled: the sequence leaves
        the batch at the next step."""
        if self.batcher is None:
            raise RuntimeError("stream_batched needs continuous batching")
        input_ids = await asyncio.to_thread(self.prompt_ids, request)  # a long prompt tokenises off the loop
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()

        def emit(item: GenerationChunk | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:  # the event loop has closed: the service is stopping
                ctx.cancelled.set()

        self.batcher.submit(request, ctx, input_ids, emit)
        with self._counter_lock:
            self.active_sequences += 1
        finished = False
        try:
            while not finished:
                item = await chunks.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finish_reason is not None
                with self._counter_lock:
                    self.tokens_generated += item.token_count
                yield item
        finally:
            with self._counter_lock:
                self.active_sequences -= 1
            if not finished:
                ctx.cancelled.set()

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids, checked against the context window with the request's max_output_tokens."""
        input_ids = self.encode(request)
        self.check_fits(len(input_ids), request.sampling.max_output_tokens)
        return input_ids

    def stream(self, request: GenerationRequest, ctx: RequestContext) -> Iterator[GenerationChunk]:
        input_ids = self.prompt_ids(request)
        if self.batcher is None:
            yield from self._stream_alone(request, ctx, input_ids)
            return
        with self._counter_lock:
            self.active_sequences += 1
        try:
            for chunk in self.batcher.stream(request, ctx, input_ids):
                with self._counter_lock:
                    self.tokens_generated += chunk.token_count
                yield chunk
        finally:
            with self._counter_lock:
                self.active_sequences -= 1

    def _stream_alone(
        self, request: GenerationRequest, ctx: RequestContext, input_ids: list[int]
    ) -> Iterator[GenerationChunk]:
        output = SequenceOutput(request.sampling, self.tokenizer, self.eos_token_ids, len(input_ids))
        with self._counter_lock:
            self.active_sequences += 1
        try:
            if ctx.is_done():
                yield output.finish(FinishReason.CANCELLED)
                return
            logits, state = self._prefill(input_ids)
            while True:
                if ctx.is_done():
                    yield output.finish(FinishReason.CANCELLED)
                    return
                chunk = output.accept(logits)
                if chunk is not None:
                    with self._counter_lock:
                        self.tokens_generated += chunk.token_count
                    yield chunk
                if output.finished:
                    return
                logits, state = self._decode(output.last_token, state)
        finally:
            with self._counter_lock:
                self.active_sequences -= 1
