"""Access lines and call ids in log lines: text and JSON, no request text unless asked for."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry.trace import INVALID_SPAN

from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.rpc.calls import CallRecord, enter_call, leave_call
from aisemble.rpc.logs import ACCESS_LOGGER, CallIdsFilter, JsonFormatter, log_call


def _capture(formatter: logging.Formatter) -> tuple[io.StringIO, logging.Handler]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(CallIdsFilter())
    handler.setFormatter(formatter)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    return out, handler


def _record(**facts) -> CallRecord:
    record = CallRecord("/aisemble.llm.v1.LlmService/Complete", "req-7", INVALID_SPAN, **facts)
    record.observe_reply(
        pb.CompleteResponse(
            text="Paris",
            finish_reason=pb.FINISH_REASON_STOP,
            usage={"prompt_tokens": 5, "output_tokens": 2, "cost": 1.25e-7},
        )
    )
    return record


def test_an_access_line_in_json_has_the_calls_facts_and_no_prompt():
    out, handler = _capture(JsonFormatter())
    try:
        record = _record(model="smollm2-135m", selection_reason="requested by name", cache="miss")
        log_call(record, "OK", 0.0123, peer="ipv4:127.0.0.1:5000")
    finally:
        logging.getLogger().removeHandler(handler)
    line = json.loads(out.getvalue().strip())
    assert line["logger"] == ACCESS_LOGGER and line["level"] == "INFO"
    assert line["rpc"] == "/aisemble.llm.v1.LlmService/Complete" and line["code"] == "OK"
    assert line["request_id"] == "req-7" and line["latency_ms"] == 12.3
    assert (line["model"], line["selection_reason"], line["cache"]) == ("smollm2-135m", "requested by name", "miss")
    assert (line["prompt_tokens"], line["output_tokens"], line["cost"]) == (5, 2, 1.25e-7)
    assert line["finish_reason"] == "FINISH_REASON_STOP" and line["peer"] == "ipv4:127.0.0.1:5000"
    assert "trace_id" not in line and "request" not in line  # no span: no trace id; no body unless asked


def test_the_request_body_is_logged_only_when_asked_for():
    out, handler = _capture(JsonFormatter())
    try:
        record = _record(model="smollm2-135m")
        record.request = pb.CompleteRequest(model="smollm2-135m", prompt="The secret prompt")
        log_call(record, "OK", 0.001)
    finally:
        logging.getLogger().removeHandler(handler)
    assert "The secret prompt" in json.loads(out.getvalue())["request"]


def test_every_line_written_while_serving_a_call_names_its_request():
    out, handler = _capture(logging.Formatter("%(message)s%(call_ids)s"))
    token = enter_call(_record())
    try:
        logging.getLogger("services.llm").warning("slow step")
    finally:
        leave_call(token)
        logging.getLogger("services.llm").warning("outside")
        logging.getLogger().removeHandler(handler)
    assert out.getvalue().splitlines() == ["slow step [request_id=req-7]", "outside"]
