"""Every failure in OpenAI's error shape, with its HTTP status: gRPC statuses, bad requests, limits (one place)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import grpc
from pydantic import ValidationError
from starlette.responses import JSONResponse

from aisemble.errors import Code
from aisemble.rpc.status import read_details, rich_status

__all__ = ["HTTP_STATUS", "OpenAIError", "error_response", "from_status", "from_validation", "param_path"]

#: The HTTP status of each gRPC code; any other code is 500. FAILED_PRECONDITION (a model of the wrong task,
#: `auto` with no healthy candidate) is 400, not 409: OpenAI's SDKs retry 409, and retrying changes nothing.
HTTP_STATUS: dict[Code, int] = {
    Code.INVALID_ARGUMENT: 400,
    Code.OUT_OF_RANGE: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}
_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


class OpenAIError(Exception):
    """A failed request as OpenAI reports it: HTTP status, message, the parameter at fault, a machine code
    (our ErrorInfo reason in lower case), and when to retry."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s

    @classmethod
    def invalid(cls, param: str | None, message: str, code: str = "invalid_request") -> OpenAIError:
        """A 400 about one parameter."""
        return cls(400, message, param=param, code=code)

    @property
    def type(self) -> str:
        """OpenAI's error `type`, from the status."""
        return "server_error" if self.status >= 500 else _TYPES.get(self.status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """The JSON body: {"error": {message, type, param, code}}."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_response(error: OpenAIError) -> JSONResponse:
    """The HTTP response of an error; Retry-After (whole seconds) and retry-after-ms (which OpenAI's SDKs read
    first) when the gateway said when to retry."""
    headers = {}
    if error.retry_after_s is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after_s)))
        headers["retry-after-ms"] = str(max(0, round(error.retry_after_s * 1000)))
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _renamed(field: str, param_names: Mapping[str, str]) -> str:
    """A request field of the gateway's (`max_output_tokens`, `texts[2]`, `image.data`) as the caller named it:
    the whole dotted path when param_names has it, else its first part."""
    head, bracket, rest = field.partition("[")
    if head in param_names:
        return param_names[head] + bracket + rest
    top, dot, tail = head.partition(".")
    return param_names.get(top, top) + dot + tail + bracket + rest


def from_status(
    exc: grpc.aio.AioRpcError, param_names: Mapping[str, str] | None = None, target: str = "the gateway"
) -> OpenAIError:
    """The error for a failed gRPC call: status by HTTP_STATUS, its reason as `code`, its RetryInfo; a bad field
    is named as the caller named it (`max_tokens`, not the gateway's `max_output_tokens`), in `param` and in the
    message. A call that never reached the gateway (no rich status) says so, and may be retried after a second."""
    code = Code.of(exc.code().value[0])
    details = read_details(rich_status(exc))
    reason, retry = details.reason, details.retry_after_s
    message = exc.details() or code.name
    fields = [(_renamed(v.field, param_names or {}), v.description) for v in details.violations]
    if fields:
        message = "; ".join(f"{field}: {description}" for field, description in fields)
    elif code == Code.UNAVAILABLE and not reason:
        message, reason, retry = f"{target} is unavailable: {message}", "GATEWAY_UNAVAILABLE", 1.0
    elif code == Code.DEADLINE_EXCEEDED and not reason:
        message = f"{target} did not answer before the deadline: {message}"
    return OpenAIError(
        HTTP_STATUS.get(code, 500),
        message,
        param=fields[0][0] if fields else None,
        code=(reason or code.name).lower(),
        retry_after_s=retry,
    )


def param_path(location: tuple[int | str, ...]) -> str:
    """A pydantic error location as a parameter path: ("messages", 0, "content") -> "messages[0].content"."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def from_validation(exc: ValidationError) -> OpenAIError:
    """A body that is not JSON, not an object, or has a field of the wrong type, missing or unknown: a 400
    about the first problem."""
    first = exc.errors(include_url=False)[0]
    param = param_path(first["loc"]) or None
    kind = first["type"]
    if kind == "json_invalid":
        detail = first["msg"].removeprefix("Invalid JSON: ")
        return OpenAIError.invalid(None, f"the body is not valid JSON: {detail}", "invalid_json")
    if kind == "model_type" and param is None:
        return OpenAIError.invalid(None, "the body must be a JSON object")
    if kind == "missing":
        return OpenAIError.invalid(param, f"'{param}' is a required parameter", "missing_required_parameter")
    if kind == "extra_forbidden":
        return OpenAIError.invalid(param, f"'{param}' is not supported by this API", "unsupported_parameter")
    return OpenAIError.invalid(param, f"'{param}': {first['msg']}", "invalid_type")
