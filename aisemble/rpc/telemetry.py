"""OpenTelemetry tracing set up from the standard OTEL_* variables; no exporter unless asked for."""

from __future__ import annotations

import logging
import os

from opentelemetry import trace

__all__ = ["configure_tracing"]

log = logging.getLogger(__name__)
_configured = False


def configure_tracing(service_name: str) -> str:
    """Install a tracer provider for OTEL_TRACES_EXPORTER ('none' by default, 'console' or 'otlp').

    OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_* are read by the SDK itself.
    Returns the exporter in use. Idempotent: the global provider can only be set once per process.
    """
    global _configured
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower() or "none"
    if exporter_name == "none" or _configured:
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
    _configured = True
    log.info("tracing with the %s exporter", exporter_name)
    return exporter_name
