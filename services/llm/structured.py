"""Structured output enforced while decoding: a grammar per format (llguidance), a token mask per sequence per step."""

from __future__ import annotations

import collections
import json
import re
import threading
from typing import Any

import numpy as np

from aisemble.errors import FieldViolation, InvalidArgumentError, ResourceExhaustedError
from services.llm.types import OutputFormat

__all__ = ["FormatCompiler", "OutputConstraint", "check_format"]

#: Formats a request may ask for (ResponseFormat's oneof).
KINDS = ("json_schema", "json_object", "regex", "choice")
MAX_FORMAT_CHARS = 64 * 1024  # a schema, pattern or choice list longer than this is refused
MAX_CHOICES = 1024
#: llguidance's bounds on one grammar (compile work and size): past them, RESOURCE_EXHAUSTED.
MAX_GRAMMAR_SIZE = 2_000_000
INITIAL_LEXER_FUEL = 5_000_000
#: Compiled grammars kept per model (by format), least recently used out first.
CACHE_SIZE = 256


def check_format(fmt: OutputFormat) -> list[FieldViolation]:
    """What is wrong with a format that can be told without a tokenizer (JSON, duplicate choices); a format over
    MAX_FORMAT_CHARS is RESOURCE_EXHAUSTED (GRAMMAR_TOO_LARGE)."""
    field = fmt.field
    size = len(fmt.value) + sum(len(c) for c in fmt.choices)
    if size > MAX_FORMAT_CHARS:  # a limit of the service, not a mistake in the format
        raise ResourceExhaustedError(
            f"{field} is {size} characters; grammars are compiled from at most {MAX_FORMAT_CHARS}",
            reason="GRAMMAR_TOO_LARGE",
            metadata={"size": str(size), "limit": str(MAX_FORMAT_CHARS)},
        )
    if fmt.kind == "json_schema":
        try:
            schema = json.loads(fmt.value)
        except json.JSONDecodeError as exc:
            return [FieldViolation(field, f"is not valid JSON: {exc.msg} at character {exc.pos}")]
        if not isinstance(schema, dict | bool):
            return [FieldViolation(field, "must be a JSON Schema: an object (or true / false)")]
    elif fmt.kind == "regex":
        if not fmt.value:
            return [FieldViolation(field, "must not be empty")]
    elif fmt.kind == "choice":
        if not fmt.choices:
            return [FieldViolation(field, "needs at least one choice")]
        if len(fmt.choices) > MAX_CHOICES:
            return [FieldViolation(field, f"{len(fmt.choices)} choices; at most {MAX_CHOICES}")]
        if any(not c for c in fmt.choices):
            return [FieldViolation(field, "must not contain an empty choice")]
        if len(set(fmt.choices)) != len(fmt.choices):
            return [FieldViolation(field, "must not contain duplicates")]
    return []


def _grammar(fmt: OutputFormat) -> str:
    """The llguidance grammar (its JSON form) of a format."""
    from llguidance import LLMatcher

    # Compact JSON (', ' and ': ' separators, no other whitespace): a small model left free to add whitespace
    # may add it until max_output_tokens.
    overrides: Any = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    if fmt.kind == "json_schema":
        return str(LLMatcher.grammar_from_json_schema(json.loads(fmt.value), overrides=overrides))
    if fmt.kind == "json_object":
        return str(LLMatcher.grammar_from_json_schema({"type": "object"}, overrides=overrides))
    if fmt.kind == "regex":
        return str(LLMatcher.grammar_from_regex(fmt.value))
    if fmt.kind == "lark":  # built by the service itself (tool calls), never taken from a request
        return str(LLMatcher.grammar_from_lark(fmt.value))
    alternatives = " | ".join(json.dumps(choice) for choice in fmt.choices)  # lark string literals
    return str(LLMatcher.grammar_from_lark(f"start: {alternatives}"))


_NOISE = re.compile(r"\s+")


class FormatCompiler:
    """One model's grammar compiler: its tokenizer as llguidance sees it (built on first use, ~0.4 s) and the
    compiled grammars by format (a template matcher each; every sequence gets a copy)."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: frozenset[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos = sorted(eos_token_ids)
        self._llg_tokenizer: Any = None
        self._templates: collections.OrderedDict[OutputFormat, Any] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.compiled = 0  # grammars compiled (cache misses), for benchmarks and tests

    def constraint(self, fmt: OutputFormat) -> OutputConstraint:
        """A fresh matcher for one sequence; INVALID_ARGUMENT naming the field for a format llguidance refuses
        (an unsupported keyword, a regex that does not compile), RESOURCE_EXHAUSTED past the grammar bounds."""
        with self._lock:
            template = self._templates.get(fmt)
            if template is not None:
                self._templates.move_to_end(fmt)
        if template is None:
            template = self._compile(fmt)
            with self._lock:
                self._templates[fmt] = template
                while len(self._templates) > CACHE_SIZE:
                    self._templates.popitem(last=False)
        return OutputConstraint(template.deep_copy(), self._vocab_size, self._eos)

    def _tokenizer_info(self) -> Any:
        with self._lock:
            if self._llg_tokenizer is None:
                import llguidance.hf

                self._llg_tokenizer = llguidance.hf.from_tokenizer(
                    self._tokenizer, n_vocab=self._vocab_size, eos_token=self._eos or None
                )
            return self._llg_tokenizer

    def _compile(self, fmt: OutputFormat) -> Any:
        from llguidance import LLMatcher, LLParserLimits

        tokenizer = self._tokenizer_info()
        try:
            grammar = _grammar(fmt)
        except (ValueError, TypeError, RuntimeError) as exc:  # llguidance refuses the schema while converting it
            raise self._invalid(fmt, str(exc)) from None
        limits = LLParserLimits(
            max_grammar_size=MAX_GRAMMAR_SIZE, initial_lexer_fuel=INITIAL_LEXER_FUEL, verbose_errors=False
        )
        is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, tokenizer, limits=limits)
        if is_error:
            message = messages[0] if messages else "the grammar was refused"
            if "limit" in message.lower() or "fuel" in message.lower() or "too large" in message.lower():
                raise ResourceExhaustedError(
                    f"{fmt.field}: the grammar is too large to compile within the limits ({message})",
                    reason="GRAMMAR_TOO_LARGE",
                )
            raise self._invalid(fmt, message)
        template = LLMatcher(tokenizer, grammar, log_level=0, limits=limits)
        if template.is_error():
            raise self._invalid(fmt, template.get_error())
        self.compiled += 1
        return template

    @staticmethod
    def _invalid(fmt: OutputFormat, message: str) -> InvalidArgumentError:
        text = _NOISE.sub(" ", message).strip()[:500]
        return InvalidArgumentError(
            f"{fmt.field}: {text}",
            reason="RESPONSE_FORMAT_INVALID",
            field_violations=[FieldViolation(fmt.field, text)],
        )


class OutputConstraint:
    """One sequence's matcher: `mask(logits)` leaves the tokens that keep the output valid (end of sequence only
    once it is complete), `consume(token)` advances it, `stopped` when nothing more can follow."""

    def __init__(self, matcher: Any, vocab_size: int, eos_token_ids: list[int]) -> None:
        import llguidance.numpy as llg_numpy

        self._matcher = matcher
        self._vocab_size = vocab_size
        self._eos = eos_token_ids
        self._llg_numpy = llg_numpy
        self._bitmask = llg_numpy.allocate_token_bitmask(1, vocab_size)

    @property
    def stopped(self) -> bool:
        """True when the output is complete and nothing may follow it (only end of sequence is allowed)."""
        return bool(self._matcher.is_stopped())

    @property
    def complete(self) -> bool:
        """True when the output so far is a complete answer (end of sequence is allowed now)."""
        return bool(self._matcher.is_accepting())

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """The logits with every token that would break the format at -inf (a copy)."""
        self._llg_numpy.fill_next_token_bitmask(self._matcher, self._bitmask, 0)
        allowed = np.unpackbits(self._bitmask[0].view(np.uint8), bitorder="little")[: self._vocab_size]
        masked = np.array(logits, dtype=np.float32, copy=True).reshape(-1)
        size = min(masked.size, allowed.size)
        masked[:size][allowed[:size] == 0] = -np.inf
        masked[size:] = -np.inf  # padding rows of the output layer beyond the tokenizer
        return masked

    def consume(self, token: int) -> None:
        """Advance past a chosen token (the mask allowed it)."""
        if not self._matcher.consume_token(token):
            raise RuntimeError(f"the grammar refused token {token}: {self._matcher.get_error()}")
