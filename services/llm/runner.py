"""Runs generations: resolves the model, applies its limits and defaults, admits, streams its chunks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aisemble.config.models import ModelSpec
from aisemble.errors import FieldViolation, InvalidArgumentError
from aisemble.hosting.admission import AdmissionControl
from aisemble.hosting.backend import RequestContext
from aisemble.hosting.host import ModelHost
from aisemble.hosting.streaming import iterate_in_thread
from aisemble.resolution import Resolved, resolve_hosted
from services.llm.answers import GenerationAnswer, GenerationDelta, Usage
from services.llm.tools import ToolCallDelta, ToolCallParser, tool_format
from services.llm.types import (
    FinishReason,
    GenerationCall,
    GenerationChunk,
    GenerationRequest,
    SamplingOverrides,
    SamplingParams,
    ToolCall,
)

__all__ = ["LlmLimits", "LlmRunner", "Resolved"]


@dataclass(frozen=True)
class LlmLimits:
    """Service-wide limits (per model limits come from the registry)."""

    # Generations of a backend without continuous batching (a remote API, params.continuous_batching: false);
    # a batched model admits its own (params.max_batch_size and max_waiting).
    max_concurrent_generations: int = 16
    max_waiting_generations: int = 64
    max_prompt_bytes: int = 256 * 1024
    max_stop_sequences: int = 8
    max_stop_sequence_chars: int = 128
    default_max_output_tokens: int = 256


class LlmRunner:
    """The transport-neutral core of the LLM service (the servicer only converts protobuf).

    One method per kind of call, each the whole of it: resolve the model, fill the caller's sampling choices
    with the model's defaults and check them against its limits, admit, generate, and count usage and cost.
    """

    def __init__(self, host: ModelHost, limits: LlmLimits | None = None) -> None:
        self.host = host
        self.limits = limits or LlmLimits()
        self.admission = AdmissionControl(
            "llm generations", self.limits.max_concurrent_generations, self.limits.max_waiting_generations
        )
        self._executor = ThreadPoolExecutor(self.limits.max_concurrent_generations, thread_name_prefix="llm-generate")

    async def complete(self, call: GenerationCall, ctx: RequestContext) -> GenerationAnswer:
        """The whole generation at once (the same path as streaming, joined)."""
        resolved, request = self._prepare(call)
        text: list[str] = []
        logprob_sum = 0.0
        last = GenerationChunk()
        async for chunk in self._generate(resolved, request, ctx):
            text.append(chunk.text)
            logprob_sum += chunk.logprob_sum
            if chunk.finish_reason is not None:
                last = chunk
        output_tokens = last.output_tokens
        finish, whole = last.finish_reason or FinishReason.CANCELLED, "".join(text)
        calls: tuple[ToolCall, ...] = ()
        if request.offers_tools and finish is FinishReason.STOP:
            parser = ToolCallParser()
            parser.feed(whole)
            found, _rest = parser.finish()
            if found is not None:
                finish, whole, calls = FinishReason.TOOL_CALLS, "", (found,)
        return GenerationAnswer(
            resolved=resolved,
            text=whole,
            finish_reason=finish,
            usage=self._usage(resolved.spec, last),
            mean_token_logprob=logprob_sum / output_tokens if output_tokens else 0.0,
            tool_calls=calls,
        )

    async def stream(self, call: GenerationCall, ctx: RequestContext) -> AsyncIterator[GenerationDelta]:
        """The generation piece by piece; the last piece has the finish reason and the usage."""
        resolved, request = self._prepare(call)
        parser = ToolCallParser() if request.offers_tools else None
        async for chunk in self._generate(resolved, request, ctx):
            finished = chunk.finish_reason is not None
            text, finish = chunk.text, chunk.finish_reason
            pieces: list[ToolCallDelta] = []
            if parser is not None:
                text, pieces = parser.feed(chunk.text)
                if finished:
                    found, rest = parser.finish()
                    pieces += rest
                    if found is not None and finish is FinishReason.STOP:
                        finish = FinishReason.TOOL_CALLS
            yield GenerationDelta(
                resolved=resolved,
                text=text,
                token_count=chunk.token_count,
                finish_reason=finish,
                usage=self._usage(resolved.spec, chunk) if finished else None,
                tool_calls=tuple(pieces),
            )

    # --- the steps ---
    def _prepare(self, call: GenerationCall) -> tuple[Resolved, GenerationRequest]:
        """The model of the call (by name, or the first ready one for 'auto': the gateway selects by rules)
        and the request its backend runs."""
        resolved = resolve_hosted(self.host, call.model, call.rpc, service="llm")
        sampling = self._sampling(resolved, call.sampling)
        if call.tools and not getattr(resolved.backend, "native_tools", False):
            calls = tool_format(call.tools, call.tool_choice)  # a tool call follows its tool's parameters
            if calls is not None:
                sampling = dataclasses.replace(sampling, output_format=calls)
        request = GenerationRequest(
            sampling=sampling,
            prompt=call.prompt,
            messages=call.messages,
            tools=call.tools,
            tool_choice=call.tool_choice,
        )
        return resolved, request

    def _sampling(self, resolved: Resolved, overrides: SamplingOverrides) -> SamplingParams:
        """Fill the caller's choices with the model's defaults and check them against the model's limits."""
        spec = resolved.spec
        limit = spec.max_output_tokens or None
        max_output = overrides.max_output_tokens
        if max_output is None:
            max_output = min(self.limits.default_max_output_tokens, limit or self.limits.default_max_output_tokens)
        elif limit is not None and max_output > limit:
            raise InvalidArgumentError(
                f"max_output_tokens {max_output} is above the limit of model '{spec.name}' ({limit})",
                reason="MAX_OUTPUT_TOKENS_TOO_LARGE",
                metadata={"max_output_tokens": str(max_output), "limit": str(limit)},
                field_violations=[FieldViolation("max_output_tokens", f"must be <= {limit} for '{spec.name}'")],
            )
        min_output = overrides.min_output_tokens or 0
        if min_output > max_output:
            raise InvalidArgumentError(
                f"min_output_tokens {min_output} is above max_output_tokens {max_output}",
                reason="MIN_OUTPUT_TOKENS_TOO_LARGE",
                metadata={"min_output_tokens": str(min_output), "max_output_tokens": str(max_output)},
                field_violations=[FieldViolation("min_output_tokens", f"must be <= max_output_tokens ({max_output})")],
            )
        defaults = dict(getattr(resolved.backend, "generation_defaults", {}) or {})
        temperature = overrides.temperature if overrides.temperature is not None else defaults.get("temperature", 1.0)
        top_p = overrides.top_p if overrides.top_p is not None else defaults.get("top_p", 1.0)
        top_k = overrides.top_k if overrides.top_k is not None else int(defaults.get("top_k", 0))
        return SamplingParams(
            max_output_tokens=max_output,
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
            seed=overrides.seed,
            stop=overrides.stop,
            min_output_tokens=min_output,
            output_format=overrides.output_format,
        )

    async def _generate(
        self, resolved: Resolved, request: GenerationRequest, ctx: RequestContext
    ) -> AsyncIterator[GenerationChunk]:
        """Stream the chunks of one generation. A continuously batched backend admits it (its batch and
        waiting room) and hands its chunks to the event loop; any other runs in a worker thread, holding one
        of this runner's admission slots."""
        backend = resolved.backend
        if getattr(backend, "batched", False):
            async for chunk in backend.stream_batched(request, ctx):  # type: ignore[attr-defined]
                yield chunk
            return
        async with self.admission.slot():
            chunks = iterate_in_thread(lambda: backend.stream(request, ctx), ctx, self._executor)
            async for chunk in chunks:
                yield chunk

    @staticmethod
    def _usage(spec: ModelSpec, last: GenerationChunk) -> Usage:
        """The token counts of a generation's last chunk, with their cost from the registry's prices."""
        cost = last.prompt_tokens * spec.cost_per_input_token + last.output_tokens * spec.cost_per_token
        return Usage(last.prompt_tokens, last.output_tokens, cost if math.isfinite(cost) else 0.0)

    def close(self) -> None:
        """Release the worker threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
