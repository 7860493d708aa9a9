"""Domain errors raised by services and backends, and their one mapping to google.rpc.Status."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

__all__ = [
    "DOMAIN",
    "AisembleError",
    "AlreadyExistsError",
    "CancelledError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UpstreamError",
    "internal_status",
    "to_rpc_status",
]

#: The ErrorInfo domain of every error this project raises.
DOMAIN = "aisemble"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, reported in a google.rpc.BadRequest detail."""

    field: str
    description: str


class AisembleError(Exception):
    """Base of all domain errors: a message, a machine-readable reason and optional details.

    Each subclass fixes the gRPC code. Backends raise these without importing grpc; the server
    interceptor turns them into a status with details, in one place.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason: str = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        self.retry_after_s = retry_after_s


class InvalidArgumentError(AisembleError):
    """The request is malformed; field_violations say which fields."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    @classmethod
    def for_field(cls, field_path: str, description: str, **kwargs: object) -> InvalidArgumentError:
        """One violation whose description is also the message."""
        return cls(
            f"{field_path}: {description}",
            field_violations=[FieldViolation(field_path, description)],
            **kwargs,  # type: ignore[arg-type]
        )


class NotFoundError(AisembleError):
    """A named thing (model, job, file) does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExistsError(AisembleError):
    """A name is already taken."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPreconditionError(AisembleError):
    """The system is not in a state where the request can run (wrong task, finished job)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class ResourceExhaustedError(AisembleError):
    """A limit (queue, size, concurrency, quota) was reached; retry_after_s says when to retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class UnavailableError(AisembleError):
    """An upstream or a model is not reachable now; retry_after_s says when to retry."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceededError(AisembleError):
    """The deadline passed before the work finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class CancelledError(AisembleError):
    """The request was cancelled."""

    code = grpc.StatusCode.CANCELLED
    default_reason = "CANCELLED"


class PermissionDeniedError(AisembleError):
    """Access is not allowed (e.g. a path outside the configured roots)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class UnauthenticatedError(AisembleError):
    """Credentials are missing or wrong."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class UnimplementedError(AisembleError):
    """The operation is not supported by this model or service."""

    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


class InternalError(AisembleError):
    """A bug: logged on the server, never detailed to clients."""

    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"


class ModelNotFoundError(NotFoundError):
    """No model of that name is registered or hosted here."""

    def __init__(self, model: str, known: Sequence[str] = ()) -> None:
        hint = f"; known models: {', '.join(sorted(known))}" if known else ""
        super().__init__(
            f"model '{model}' is not registered{hint}", reason="MODEL_NOT_FOUND", metadata={"model": model}
        )


class ModelNotReadyError(UnavailableError):
    """The model is registered but not loaded (still loading, failed, or unloading)."""

    def __init__(self, model: str, state: str, retry_after_s: float = 1.0) -> None:
        super().__init__(
            f"model '{model}' is not ready ({state})",
            reason="MODEL_NOT_READY",
            metadata={"model": model, "state": state},
            retry_after_s=retry_after_s,
        )


class UpstreamError(AisembleError):
    """Another server's status, passed through unchanged (code, message and details)."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message, reason="UPSTREAM")
        self.status = status
        self.code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_rpc_status(error: AisembleError) -> status_pb2.Status:
    """Build the google.rpc.Status (with ErrorInfo, BadRequest, RetryInfo details) for a domain error."""
    if isinstance(error, UpstreamError):
        return error.status
    code = error.code.value[0]
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
    return status_pb2.Status(code=code, message=error.message, details=details)


def internal_status(request_id: str) -> status_pb2.Status:
    """The status sent for an unexpected exception: no traceback, only an id to find it in the logs."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN, metadata={"request_id": request_id})
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (request id {request_id}); the server logged the details",
        details=[_pack(info)],
    )
