"""Structured output benchmark: tokens/s of JSON-Schema-constrained vs free generation, the same number of tokens
per sequence, in one run, and the grammar's compile time (the tokenizer's one-time set-up, a schema cold, cached)."""

from __future__ import annotations

import json
import time
from typing import Any

from aisemble.config.models import load_models
from aisemble.hosting.backend import RequestContext, create_backend
from aisemble.store.model_store import ModelStore, default_store_root
from bench.common import median, print_table, timed_in_threads
from services.llm.structured import FormatCompiler
from services.llm.types import ChatTurn, GenerationRequest, OutputFormat, SamplingParams

REPEATS = 3
BATCH = 8
TOKENS = 48
#: A nested object, an enum, integer bounds, required fields (the shape the tests validate).
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
    "required": ["name", "age", "role", "address"],
    "additionalProperties": False,
}
#: A list of 20 such records: longer than TOKENS, so every constrained sequence runs TOKENS tokens of keys, numbers
#: and strings (the free ones run exactly TOKENS too, by min_output_tokens).
LONG_SCHEMA = {
    "type": "object",
    "properties": {"people": {"type": "array", "items": SCHEMA, "minItems": 20}},
    "required": ["people"],
}
PEOPLE = [
    "Alice, a 34-year-old administrator from Paris",
    "Bob, 19, a guest visiting Lyon",
    "Chen Wei, user, 45, lives in Shanghai",
    "Dana, an admin aged 52 in Berlin",
    "Eve, a user of 27 from Madrid",
    "Farid, 61, guest, Cairo",
    "Grace, 40, administrator in Boston",
    "Hiro, 23, a user in Osaka",
]


def _rate(backend: Any, constrained: bool) -> float:
    """Output tokens/s of BATCH concurrent chats in the backend's batcher, with the test schema or free."""
    fmt = OutputFormat("json_schema", json.dumps(LONG_SCHEMA)) if constrained else None
    least = 0 if constrained else TOKENS
    requests = [
        GenerationRequest(
            sampling=SamplingParams(
                max_output_tokens=TOKENS, min_output_tokens=least, temperature=0.7, seed=i, output_format=fmt
            ),
            messages=(ChatTurn("user", f"List people like this one as JSON: {PEOPLE[i]}."),),
        )
        for i in range(BATCH)
    ]
    counts = [0] * BATCH

    def one(index: int) -> None:
        counts[index] = sum(c.token_count for c in backend.stream(requests[index], RequestContext()))

    return sum(counts) / timed_in_threads(one, BATCH)


def _compile_times(backend: Any) -> tuple[float, float, float]:
    """(tokenizer set-up s, the schema's first compile s, the same schema again s) on a fresh compiler."""
    engine = backend.engine
    compiler = FormatCompiler(engine.tokenizer, int(engine.config["vocab_size"]), engine.eos_token_ids)
    fmt = OutputFormat("json_schema", json.dumps(SCHEMA))
    started = time.perf_counter()
    compiler.constraint(OutputFormat("regex", "a"))  # builds the tokenizer's view once
    setup = time.perf_counter() - started
    started = time.perf_counter()
    compiler.constraint(fmt)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    compiler.constraint(fmt)
    return setup, cold, time.perf_counter() - started


def main() -> None:
    """Print the table and the ratio with its target."""
    store = ModelStore(default_store_root())
    print(f"SmolLM2-135M, {BATCH} concurrent chats, sampled, {TOKENS} tokens each, median of {REPEATS} rounds")
    rows = []
    for name in ("smollm2-135m-onnx", "smollm2-135m"):
        backend = create_backend(load_models()[name], store)
        backend.load()
        backend.batcher.prefix_cache.max_bytes = 0  # every round prefills in full
        _rate(backend, True), _rate(backend, False)  # warm-up (and the schema compiled once)
        free, constrained = [], []
        for _ in range(REPEATS):
            free.append(_rate(backend, False))
            constrained.append(_rate(backend, True))
        setup, cold, cached = _compile_times(backend)
        ratio = median(constrained) / median(free)
        rows.append([name, median(free), median(constrained), f"{ratio:.2f}", setup * 1000, cold * 1000, cached * 1000])
        print(f"{name}: constrained vs free tokens/s {ratio:.2f} (target >= 0.85)")
        backend.cleanup()
    print_table(
        [
            "model",
            "free tokens/s",
            "JSON Schema tokens/s",
            "ratio",
            "tokenizer set-up ms (once per model)",
            "schema compile ms, cold",
            "cached ms",
        ],
        rows,
    )
