"""Log lines that join traces: every line of a call carries its request and trace ids, one access line per call,
as text or JSON (AISEMBLE_LOG_FORMAT=json); request bodies only when asked for (AISEMBLE_LOG_REQUESTS=1)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from google.protobuf import json_format

from aisemble.rpc.calls import CallRecord, current_call
from aisemble.rpc.telemetry import current_ids

__all__ = [
    "ACCESS_LOGGER",
    "CallIdsFilter",
    "JsonFormatter",
    "access_log_on",
    "configure_logging",
    "log_call",
    "log_requests_on",
]

#: The logger of the one line per call.
ACCESS_LOGGER = "aisemble.access"
_access = logging.getLogger(ACCESS_LOGGER)
_MAX_REQUEST_CHARS = 2000
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(call_ids)s"
#: Fields of a record that are LogRecord's own, not `extra` a line was given.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "call_ids"}


def access_log_on() -> bool:
    """Whether servers write one access line per call (AISEMBLE_ACCESS_LOG, on unless '0')."""
    return os.environ.get("AISEMBLE_ACCESS_LOG", "1").strip() not in ("0", "false", "no", "off")


def log_requests_on() -> bool:
    """Whether access lines carry the request body, prompts included (AISEMBLE_LOG_REQUESTS=1; off by default)."""
    return os.environ.get("AISEMBLE_LOG_REQUESTS", "0").strip() in ("1", "true", "yes", "on")


class CallIdsFilter(logging.Filter):
    """Adds request_id, trace_id and span_id of the call being served to every record (empty outside a call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            call = current_call()
            record.request_id = call.request_id if call is not None else ""  # type: ignore[attr-defined]
        if not hasattr(record, "trace_id"):
            record.trace_id, record.span_id = current_ids()  # type: ignore[attr-defined]
        request_id, trace_id = getattr(record, "request_id", ""), getattr(record, "trace_id", "")
        ids = [f"request_id={request_id}"] if request_id else []
        if trace_id:
            ids.append(f"trace_id={trace_id}")
        record.call_ids = f" [{' '.join(ids)}]" if ids else ""  # type: ignore[attr-defined]
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the call's ids, and the line's `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and value not in ("", None):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: int = logging.INFO, log_format: str | None = None) -> None:
    """Log to stderr as text or JSON (default AISEMBLE_LOG_FORMAT, else text), every line with its call's ids."""
    chosen = (log_format or os.environ.get("AISEMBLE_LOG_FORMAT") or "text").strip().lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallIdsFilter())
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _request_body(message: Any) -> str:
    try:
        text = json.dumps(json_format.MessageToDict(message), ensure_ascii=False)
    except Exception:  # noqa: BLE001 - a body that cannot be shown is left out, never fails the call
        return ""
    return text if len(text) <= _MAX_REQUEST_CHARS else text[:_MAX_REQUEST_CHARS] + "..."


def log_call(record: CallRecord, code: str, seconds: float, peer: str = "") -> None:
    """The access line of one finished call."""
    if not _access.isEnabledFor(logging.INFO):
        return
    trace_id, span_id = "", ""
    context = record.span.get_span_context()
    if context.is_valid:
        trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
    fields: dict[str, Any] = {
        "rpc": record.method,
        "code": code,
        "latency_ms": round(seconds * 1000, 3),
        "request_id": record.request_id,
        "trace_id": trace_id,
        "span_id": span_id,
    }
    fields.update(record.facts())
    if peer:
        fields["peer"] = peer
    if record.request is not None:
        fields["request"] = _request_body(record.request)
    shown = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("rpc", "request_id", "trace_id", "span_id"))
    _access.info("%s %s", record.method, shown, extra=fields)
