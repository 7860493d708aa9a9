"""A local text-generation registry entry: its settings, its share of an engine, and its decoding loops."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from aisemble.errors import FailedPreconditionError, FieldViolation, InvalidArgumentError, UnavailableError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.settings import ModelSettings, setting
from services.llm.backends.engine import ENGINES, DecoderEngine
from services.llm.scheduler import BatchLimits, ContinuousBatcher
from services.llm.sequence import SequenceOutput
from services.llm.structured import OutputConstraint
from services.llm.tools import tools_prompt
from services.llm.types import FinishReason, GenerationChunk, GenerationRequest

__all__ = ["ADAPTER_KEYS", "ContinuousBatchingSettings", "LocalDecoderBackend"]

_DEFAULT = BatchLimits()
#: Params that name an adapter's base, not a runtime setting of the engine.
ADAPTER_KEYS = frozenset({"base_model_path"})
#: Prompts up to this many characters are tokenised on the event loop; longer ones in a worker thread.
INLINE_TOKENIZE_CHARS = 8192


def chat_messages(request: GenerationRequest) -> list[dict[str, str]]:
    """The chat as the template takes it: a call the assistant made in the form calls are generated in, and the
    tools on offer in the system message (the templates we ship have no place of their own for them)."""
    messages = []
    for turn in request.messages:
        content = turn.content
        for call in turn.tool_calls:
            content += json.dumps({"name": call.name, "arguments": json.loads(call.arguments or "{}")})
        messages.append({"role": turn.role, "content": content})
    if request.offers_tools:
        shown = tools_prompt(request.tools, request.tool_choice)
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{shown}"}
        else:
            messages.insert(0, {"role": "system", "content": shown})
    return messages


def _prompt_chars(request: GenerationRequest) -> int:
    return len(request.prompt) if request.prompt is not None else sum(len(t.content) for t in request.messages)


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
    prefix_cache_mb: float = setting(_DEFAULT.prefix_cache_bytes / 2**20, minimum=0)

    def batch_limits(self) -> BatchLimits:
        """The batcher's bounds."""
        return BatchLimits(
            max_batch_size=self.max_batch_size,
            max_waiting=self.max_waiting,
            max_tokens_in_flight=self.max_tokens_in_flight,
            max_prefill_tokens=self.max_prefill_tokens,
            gather_gap_s=self.gather_ms / 1000,
            gather_max_s=self.gather_max_ms / 1000,
            prefix_cache_bytes=int(self.prefix_cache_mb * 2**20),
        )

    def engine_key(self) -> tuple[Any, ...]:
        """The settings that shape the loaded engine (not its batching): entries that agree on them share it."""
        batching = {f.name for f in dataclasses.fields(ContinuousBatchingSettings)}
        return tuple(
            (f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in batching | ADAPTER_KEYS
        )


class LocalDecoderBackend(Backend, abc.ABC):
    """A causal LM run step by step in this process, on an engine shared with every entry that names the same
    artifact (services/llm/backends/engine.py); a LoRA adapter entry runs on its base's engine, unmerged.

    With continuous batching (the default; params.continuous_batching: false turns it off; its bounds
    are ContinuousBatchingSettings, read once at load), every concurrent sequence joins one of the
    engine's ContinuousBatchers, which decodes them together. Without it, each request runs its own
    loop over `engine.forward`. Either way cancellation and the deadline are checked before every
    step, so a cancelled request stops within one decoding step.
    `active_sequences` and `tokens_generated` count what the backend computes (info() reports them, the
    LLM service exports them to Prometheus): they show compute start and stop.
    """

    tasks = frozenset({"text-generation"})
    #: This backend's settings in the registry entry's params.
    settings_class: ClassVar[type[ContinuousBatchingSettings]] = ContinuousBatchingSettings
    #: The runtime that loads and runs the network.
    engine_class: ClassVar[type[DecoderEngine]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine: Any = None
        self.tokenizer: Any = None
        self.context_window = 0
        self.eos_token_ids: frozenset[int] = frozenset()
        self.generation_defaults: dict[str, float] = {}
        self.settings = self.settings_class()
        self.adapter: int | None = None  # this entry's LoRA adapter on the engine (None: the base model)
        self.tokens_generated = 0  # all time
        self.active_sequences = 0  # generations running now (in the batcher or alone)
        self._counter_lock = threading.Lock()
        self._engine_key: tuple[Any, ...] | None = None
        self.batcher: ContinuousBatcher | None = None

    # --- Backend ---
    def load(self) -> None:
        self.settings = self.settings_class.for_serving(self.spec)  # refused settings: before any weight is read
        if self.store is None:
            raise FailedPreconditionError(f"model '{self.spec.name}' needs the model store")
        path = self.store.require(self.spec.model_path)
        base, adapter = self._artifacts(path)
        manifest = self.store.manifest(base.name)  # new files under the same name: a new engine, not the old one
        version = manifest.fingerprint() if manifest is not None else ""
        key = (self.engine_class, str(base), version, self.spec.device, self.settings.engine_key())
        if adapter is not None and not self.engine_class.serves_adapters:
            raise FailedPreconditionError(f"model '{self.spec.name}': {self.provider} does not serve LoRA adapters")
        engine = ENGINES.acquire(key, lambda: self._build_engine(base))
        try:
            if adapter is not None:
                self.adapter = engine.add_adapter(adapter)
        except BaseException:
            ENGINES.release(key)
            raise
        self.engine, self._engine_key = engine, key
        self.tokenizer = engine.tokenizer
        self.context_window = self.spec.max_tokens or int(engine.config.get("max_position_embeddings", 2048))
        self.eos_token_ids = engine.eos_token_ids
        self.generation_defaults = dict(engine.generation_defaults)
        if self.settings.continuous_batching:
            self.batcher = engine.batcher(self.settings.batch_limits())

    def _artifacts(self, path: Path) -> tuple[Path, Path | None]:
        """The base weights' folder and, for a LoRA adapter (a peft folder), the adapter's."""
        if not (path / "adapter_config.json").exists():
            return path, None
        base_name = getattr(self.settings, "base_model_path", None)
        if not base_name or self.store is None:
            raise FailedPreconditionError(
                f"model '{self.spec.name}' is a LoRA adapter: params.base_model_path must name the base artifact"
            )
        return self.store.require(base_name), path

    def _build_engine(self, path: Path) -> DecoderEngine:
        engine = self.engine_class(path, self.spec.device)
        engine.load(self.settings)
        engine.warm_up()
        return engine

    def _batch_limits(self, params: Mapping[str, Any]) -> BatchLimits:
        """The batcher's bounds in a params mapping, parsed as load() parses the entry's (FAILED_PRECONDITION,
        MODEL_CONFIG_INVALID, naming each bad `params.<key>`)."""
        return self.settings_class.for_serving(self.spec, params).batch_limits()

    def info(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "provider": self.provider,
            "model": self.spec.name,
            "context_window": self.context_window,
            "generation_defaults": self.generation_defaults,
            "active_sequences": self.active_sequences,
            "tokens_generated": self.tokens_generated,
            "shared_by": ENGINES.users(self._engine_key) if self._engine_key else 0,
        }
        if self.adapter is not None:
            facts["lora_adapter"] = {"base": self.engine.path.name, "served": "unmerged, on the shared base"}
        if self.batcher is not None:
            cache = self.batcher.prefix_cache
            facts["continuous_batching"] = {
                "max_batch_size": self.batcher.limits.max_batch_size,
                "running": self.batcher.running,
                "waiting": self.batcher.waiting,
                "prefix_cache": {"bytes": cache.size_bytes, "hits": cache.hits, "tokens_reused": cache.tokens_reused},
            }
        return facts

    def cleanup(self) -> None:
        engine, key = self.engine, self._engine_key
        if engine is None or key is None:
            return
        if self.batcher is not None:
            if self.adapter is not None:
                self.batcher.prefix_cache.forget(self.adapter)
            engine.release_batcher(self.batcher.limits)
            self.batcher = None
        if self.adapter is not None:
            engine.remove_adapter(self.adapter)
        self.engine = self._engine_key = None
        ENGINES.release(key)

    def encode(self, request: GenerationRequest) -> list[int]:
        """Token ids of the prompt, with the chat template applied for chat requests (tools offered are shown in
        the system message; earlier calls are written as the model writes them, results as the tool's turns)."""
        if request.is_chat:
            text = self.tokenizer.apply_chat_template(
                chat_messages(request), add_generation_prompt=True, tokenize=False
            )
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(request.prompt)["input_ids"])

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids, checked against the context window with the request's max_output_tokens."""
        input_ids = self.encode(request)
        self.check_fits(len(input_ids), request.sampling.max_output_tokens)
        return input_ids

    def prepare(self, request: GenerationRequest) -> tuple[list[int], OutputConstraint | None]:
        """The prompt's token ids and, with an output format, the sequence's grammar matcher (compiled or from
        the engine's cache): INVALID_ARGUMENT / RESOURCE_EXHAUSTED here, before any token is generated."""
        if self.engine is None:  # a request that raced the model's unloading
            raise UnavailableError(f"model '{self.spec.name}' has been unloaded", reason="MODEL_UNLOADED")
        input_ids = self.prompt_ids(request)
        fmt = request.sampling.output_format
        return input_ids, (self.engine.formats.constraint(fmt) if fmt is not None else None)

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

    def stream(self, request: GenerationRequest, ctx: RequestContext) -> Iterator[GenerationChunk]:
        input_ids, constraint = self.prepare(request)
        if self.batcher is None:
            yield from self._stream_alone(request, ctx, input_ids, constraint)
            return
        with self._active():
            for chunk in self.batcher.stream(request, ctx, input_ids, self.adapter, constraint):
                yield self._counted(chunk)

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        """Count a generation in active_sequences while the block runs."""
        with self._counter_lock:
            self.active_sequences += 1
        try:
            yield
        finally:
            with self._counter_lock:
                self.active_sequences -= 1

    def _counted(self, chunk: GenerationChunk) -> GenerationChunk:
        """The chunk, its tokens added to tokens_generated."""
        with self._counter_lock:
            self.tokens_generated += chunk.token_count
        return chunk

    @property
    def batched(self) -> bool:
        """True when generations join the continuous batcher: `stream_batched` serves them on the event loop
        and the batcher is their admission (the runner neither admits them nor parks a thread per stream)."""
        return self.batcher is not None

    async def stream_batched(self, request: GenerationRequest, ctx: RequestContext) -> AsyncIterator[GenerationChunk]:
        """The generation's chunks, handed by the decoding thread straight to this coroutine's queue (no
        thread per stream). Leaving early (the caller went away) marks `ctx` cancelled: the sequence leaves
        the batch at the next step."""
        batcher = self.batcher
        if batcher is None:
            raise RuntimeError("stream_batched needs continuous batching")
        if _prompt_chars(request) <= INLINE_TOKENIZE_CHARS and request.sampling.output_format is None:
            input_ids, constraint = self.prepare(request)  # well under a millisecond: no thread for it
        else:  # a long prompt tokenises, a grammar compiles, off the loop
            input_ids, constraint = await asyncio.to_thread(self.prepare, request)
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()

        def emit(item: GenerationChunk | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:  # the event loop has closed: the service is stopping
                ctx.cancelled.set()

        batcher.submit(request, ctx, input_ids, emit, self.adapter, constraint)
        finished = False
        with self._active():
            try:
                while not finished:
                    item = await chunks.get()
                    if isinstance(item, BaseException):
                        finished = True
                        raise item
                    finished = item.finish_reason is not None
                    yield self._counted(item)
            finally:
                if not finished:
                    ctx.cancelled.set()

    def _stream_alone(
        self,
        request: GenerationRequest,
        ctx: RequestContext,
        input_ids: list[int],
        constraint: OutputConstraint | None = None,
    ) -> Iterator[GenerationChunk]:
        engine = self.engine
        engine.prepare_thread()
        output = SequenceOutput(request.sampling, self.tokenizer, self.eos_token_ids, len(input_ids), constraint)
        with self._active():
            if ctx.is_done():
                yield output.finish(FinishReason.CANCELLED)
                return
            logits, kv = engine.forward(input_ids, None, 0, self.adapter)
            length = len(input_ids)
            while True:
                if ctx.is_done():
                    yield output.finish(FinishReason.CANCELLED)
                    return
                chunk = output.accept(logits)
                if chunk is not None:
                    yield self._counted(chunk)
                if output.finished:
                    return
                logits, kv = engine.forward([output.last_token], kv, length, self.adapter)
                length += 1
