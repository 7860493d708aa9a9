"""What one RPC did, gathered while it runs (its model, selection, usage, token times), for its span, its per-model
metrics and its access log line: the server's outer interceptor opens it, the code that learns a fact sets it."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

__all__ = ["CallRecord", "current_call", "enter_call", "leave_call", "note_model"]


@dataclass
class CallRecord:
    """One RPC in progress. `model` is set only from the registry or the hosted models (never from request text),
    so the metrics' model label stays bounded."""

    method: str
    request_id: str
    span: Span
    started: float = field(default_factory=time.perf_counter)
    model: str = ""
    selection_reason: str = ""
    cache: str = ""  # "hit" or "miss" when the gateway's result cache was asked
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    finish_reason: str = ""
    replies: int = 0
    first_token_s: float | None = None  # from the start of the call to its first generated token
    token_gaps: list[float] = field(default_factory=list)  # seconds per token between later token replies
    request: Any = None  # the request message, kept only when prompts are logged (AISEMBLE_LOG_REQUESTS)
    _last_token_at: float | None = None

    def observe_reply(self, reply: Any) -> None:
        """One reply sent: its usage is added, and generated tokens (`token_count`) time the generation."""
        self.replies += 1
        fields = _fields_of(reply)
        if fields.usage and reply.HasField("usage"):
            usage = reply.usage
            self.prompt_tokens += usage.prompt_tokens
            self.output_tokens += usage.output_tokens
            self.cost += usage.cost
        if fields.finish_reason:
            reason = reply.finish_reason
            if reason:
                self.finish_reason = fields.finish_reason(reason)
        if fields.token_count:
            count = reply.token_count
            if count > 0:
                self.tokens_arrived(count)

    def facts(self) -> dict[str, Any]:
        """What the call did, by plain name, leaving out what did not happen (for its span and access line)."""
        facts: dict[str, Any] = {}
        for name in ("model", "selection_reason", "cache"):
            if getattr(self, name):
                facts[name] = getattr(self, name)
        if self.prompt_tokens or self.output_tokens:
            facts["prompt_tokens"], facts["output_tokens"] = self.prompt_tokens, self.output_tokens
        if self.cost:
            facts["cost"] = float(f"{self.cost:.6g}")
        if self.finish_reason:
            facts["finish_reason"] = self.finish_reason
        if self.first_token_s is not None:
            facts["first_token_ms"] = round(self.first_token_s * 1000, 3)
        if self.replies > 1:
            facts["replies"] = self.replies
        return facts

    def tokens_arrived(self, count: int) -> None:
        """`count` tokens were sent now."""
        now = time.perf_counter()
        if self._last_token_at is None:
            self.first_token_s = now - self.started
        else:
            gap = (now - self._last_token_at) / count
            self.token_gaps.extend([gap] * min(count, 64))
        self._last_token_at = now


@dataclass(frozen=True)
class _Fields:
    usage: bool
    token_count: bool
    finish_reason: Any  # False, or how to name the value (an enum's Name, or str)


_FIELDS: dict[Any, _Fields] = {}


def _fields_of(message: Any) -> _Fields:
    descriptor = getattr(message, "DESCRIPTOR", None)
    found = _FIELDS.get(descriptor)
    if found is None:
        by_name = descriptor.fields_by_name if descriptor is not None else {}
        usage = "usage" in by_name and by_name["usage"].message_type is not None
        finish = by_name.get("finish_reason")
        namer: Any = False
        if finish is not None and finish.enum_type is not None:
            values = finish.enum_type.values_by_number
            namer = lambda number: values[number].name if number in values else str(number)  # noqa: E731
        elif finish is not None:
            namer = str
        found = _FIELDS[descriptor] = _Fields(usage, "token_count" in by_name, namer)
    return found


_current: ContextVar[CallRecord | None] = ContextVar("aisemble_call", default=None)


def current_call() -> CallRecord | None:
    """The record of the RPC this code serves (None outside one)."""
    return _current.get()


def note_model(model: str, reason: str = "") -> None:
    """Say which model (a registry or hosted name) serves the current RPC, and why it was chosen."""
    record = _current.get()
    if record is not None:
        record.model = model
        if reason:
            record.selection_reason = reason


def enter_call(record: CallRecord) -> Any:
    """Make `record` the current RPC's (for the server's outer interceptor); returns the token for leave_call."""
    return _current.set(record)


def leave_call(token: Any) -> None:
    """Undo enter_call."""
    try:
        _current.reset(token)
    except ValueError:  # reset from another context (a generator closed elsewhere): that context ends anyway
        pass
