"""Tracing: one OpenTelemetry provider per process from the OTEL_* variables, W3C context in and out of gRPC metadata,
and spans for the steps inside a call (a no-op costing one flag check while tracing is off)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from aisemble.errors import Code

__all__ = [
    "TRACE_KEYS",
    "configure_tracing",
    "context_from_carrier",
    "context_from_metadata",
    "current_ids",
    "current_trace_context",
    "end_span",
    "install_tracing",
    "now_ns",
    "record_span",
    "span",
    "start_span",
    "trace_metadata",
    "tracing_on",
    "uninstall_tracing",
]

log = logging.getLogger(__name__)

#: Metadata keys of the trace context (W3C traceparent and tracestate, baggage): a traced hop writes its own.
TRACE_KEYS = frozenset({"traceparent", "tracestate", "baggage", "grpc-trace-bin"})

_CODE_NUMBERS = {code.name: int(code) for code in Code}
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: Any = None
_configured_from_env = False


def tracing_on() -> bool:
    """Whether this process records spans."""
    return _provider is not None


def install_tracing(provider: Any) -> None:
    """Record spans with `provider` (an SDK TracerProvider) from now on: for configure_tracing, and tests and
    benchmarks that bring their own exporter. It is this process's global provider too, for instrumentations."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("aisemble")


def uninstall_tracing() -> None:
    """Stop recording spans (spans in progress still end and export)."""
    global _tracer, _provider
    _provider, _tracer = None, trace.NoOpTracer()


def configure_tracing(service_name: str) -> str:
    """Install a tracer provider for OTEL_TRACES_EXPORTER ('none' by default, 'console' or 'otlp').

    OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_BSP_* and OTEL_EXPORTER_OTLP_* are
    read by the SDK itself. Returns the exporter in use. Once per process: a later call changes nothing.
    """
    global _configured_from_env
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower() or "none"
    if exporter_name == "none" or _configured_from_env:
        return exporter_name
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported (use none, console or otlp); tracing off", exporter_name)
        return "none"
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"aisemble-{service_name}"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    install_tracing(provider)
    _configured_from_env = True
    log.info("tracing with the %s exporter", exporter_name)
    return exporter_name


# --- context in and out of metadata ---
def context_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> otel_context.Context:
    """The caller's trace context from its gRPC metadata (W3C traceparent; an invalid one is ignored)."""
    carrier = {key: value for key, value in metadata or () if key in TRACE_KEYS and isinstance(value, str)}
    return propagate.extract(carrier) if carrier else otel_context.Context()


def trace_metadata(metadata: Sequence[tuple[str, str | bytes]]) -> tuple[tuple[str, str | bytes], ...] | None:
    """`metadata` carrying the current span's context instead of any it held (None: no change, tracing is off or
    no span is current, so a caller's context passes through an untraced process unchanged)."""
    if _provider is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return (*((k, v) for k, v in metadata if k not in TRACE_KEYS), *carrier.items())


def current_trace_context() -> dict[str, str]:
    """The current span's context as W3C headers, to keep with work that outlives the call (a fine-tuning job);
    empty while tracing is off."""
    carrier: dict[str, str] = {}
    if _provider is not None:
        propagate.inject(carrier)
    return carrier


def context_from_carrier(carrier: Mapping[str, str]) -> otel_context.Context | None:
    """A context kept by current_trace_context (None when it holds none: the span gets the current parent)."""
    return propagate.extract(dict(carrier)) if carrier else None


def current_ids() -> tuple[str, str]:
    """The current trace and span ids in hex ('' when no span is recorded), for log lines."""
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return "", ""
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


# --- spans ---
def start_span(
    name: str,
    parent: otel_context.Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Span:
    """A started span (a non-recording one while tracing is off), child of `parent` (default: the current span)."""
    return _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


def end_span(target: Span, error: BaseException | None = None, code: str | None = None) -> None:
    """End a span, marked as an error when the call failed (`code`: its gRPC status name)."""
    if target.is_recording():
        if code is not None:
            target.set_attribute("rpc.grpc.status_code", _CODE_NUMBERS.get(code, 2))
        if error is not None:
            target.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:256]))
        elif code not in (None, "OK"):
            target.set_status(Status(StatusCode.ERROR, code))
    target.end()


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
) -> Iterator[Span]:
    """A span around a block, current inside it, child of `parent` (default: the current span); an exception
    marks it as an error."""
    if _provider is None:
        yield trace.INVALID_SPAN
        return
    started = _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(started))
    error: BaseException | None = None
    try:
        yield started
    except BaseException as exc:
        error = exc
        raise
    finally:
        otel_context.detach(token)
        end_span(started, error)


def record_span(
    name: str,
    parent: otel_context.Context | None,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """A span that already happened (times from time.time_ns()), for work measured off the event loop: the
    batcher's queue wait, prefill and decode."""
    if _provider is None or parent is None:
        return
    done = _tracer.start_span(name, context=parent, start_time=start_ns, attributes=attributes)
    done.end(end_time=max(end_ns, start_ns))


def now_ns() -> int:
    """The clock spans use."""
    return time.time_ns()
