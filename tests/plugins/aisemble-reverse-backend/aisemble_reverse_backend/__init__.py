"""A third-party text-generation backend that answers with the prompt's words in reverse order."""

from __future__ import annotations

from collections.abc import Iterator

from aisemble.hosting.backend import Backend, RequestContext
from services.llm.types import FinishReason, GenerationChunk, GenerationRequest

__all__ = ["ReverseBackend"]


class ReverseBackend(Backend):
    """Streams the words of the prompt (or the last chat message) back to front, one word per chunk."""

    provider = "reverse"
    tasks = frozenset({"text-generation"})

    def load(self) -> None:
        self.loaded = True

    def run(self, request: GenerationRequest, ctx: RequestContext) -> GenerationChunk:
        chunks = list(self.stream(request, ctx))
        return GenerationChunk(text="".join(c.text for c in chunks), finish_reason=chunks[-1].finish_reason)

    def stream(self, request: GenerationRequest, ctx: RequestContext) -> Iterator[GenerationChunk]:
        text = request.prompt if request.prompt is not None else request.messages[-1].content
        words = text.split()[::-1][: request.sampling.max_output_tokens]
        for index, word in enumerate(words):
            ctx.check()
            yield GenerationChunk(text=word if index == 0 else " " + word, token_count=1)
        yield GenerationChunk(
            finish_reason=FinishReason.STOP, prompt_tokens=len(text.split()), output_tokens=len(words)
        )
