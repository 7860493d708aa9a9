"""Domain errors as google.rpc.Status (ErrorInfo, BadRequest, RetryInfo), and a failed call's status read back."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from aisemble.errors import DOMAIN, AisembleError, Code, FieldViolation, UpstreamError

__all__ = [
    "STATUS_DETAILS_KEY",
    "StatusDetails",
    "error_reason",
    "grpc_code",
    "internal_status",
    "read_details",
    "rich_status",
    "to_rpc_status",
]

#: Metadata key carrying a serialised google.rpc.Status (the gRPC rich error model).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def grpc_code(code: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a google.rpc code number (UNKNOWN for one outside the set)."""
    number = Code.of(code).value
    return next(c for c in grpc.StatusCode if c.value[0] == number)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_rpc_status(error: AisembleError) -> status_pb2.Status:
    """Build the google.rpc.Status (with ErrorInfo, BadRequest, RetryInfo details) for a domain error."""
    if isinstance(error, UpstreamError):
        if error.status_bytes:
            return status_pb2.Status.FromString(error.status_bytes)
        return status_pb2.Status(code=int(error.code), message=error.message)
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=dict(error.metadata)))]
    if error.field_violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in error.field_violations
                    ]
                )
            )
        )
    if error.retry_after_s is not None:
        seconds = max(0.0, error.retry_after_s)
        whole = math.floor(seconds)
        delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=int(error.code), message=error.message, details=details)


def internal_status(request_id: str) -> status_pb2.Status:
    """The status sent for an unexpected exception: no traceback, only an id to find it in the logs."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN, metadata={"request_id": request_id})
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (request id {request_id}); the server logged the details",
        details=[_pack(info)],
    )


def rich_status(exc: grpc.aio.AioRpcError) -> bytes:
    """The serialized google.rpc.Status a failed call carried in its trailers (b"" when it sent none)."""
    for key, value in exc.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    return b""


@dataclass(frozen=True)
class StatusDetails:
    """What a google.rpc.Status says beyond its code and message: the ErrorInfo, BadRequest and RetryInfo details."""

    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()
    retry_after_s: float | None = None


def read_details(raw: bytes) -> StatusDetails:
    """The details of a serialized google.rpc.Status (empty ones for b"")."""
    reason, metadata, retry = "", {}, None
    violations: tuple[FieldViolation, ...] = ()
    for detail in status_pb2.Status.FromString(raw).details if raw else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = tuple(FieldViolation(v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            delay = error_details_pb2.RetryInfo()
            detail.Unpack(delay)
            retry = delay.retry_delay.ToTimedelta().total_seconds()
    return StatusDetails(reason, metadata, violations, retry)


def error_reason(exc: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call ("" when it sent none)."""
    return read_details(rich_status(exc)).reason
