"""Domain errors raised by services and backends (grpc-free; aisemble.rpc.status maps them to a status)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "DOMAIN",
    "AisembleError",
    "AlreadyExistsError",
    "CancelledError",
    "Code",
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
]

#: The ErrorInfo domain of every error this project raises.
DOMAIN = "aisemble"


class Code(enum.IntEnum):
    """The canonical status codes (google.rpc.Code numbers, the names grpc.StatusCode uses)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def of(cls, number: int) -> Code:
        """The code of a number; UNKNOWN for one outside the canonical set."""
        try:
            return cls(number)
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, reported in a google.rpc.BadRequest detail."""

    field: str
    description: str


class AisembleError(Exception):
    """Base of all domain errors: a message, a machine-readable reason and optional details.

    Each subclass fixes the status code. Backends raise these without importing grpc; the server
    interceptor turns them into a status with details, in one place (aisemble.rpc.status).
    """

    code: Code = Code.UNKNOWN
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

    code = Code.INVALID_ARGUMENT
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

    code = Code.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExistsError(AisembleError):
    """A name is already taken."""

    code = Code.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPreconditionError(AisembleError):
    """The system is not in a state where the request can run (wrong task, finished job)."""

    code = Code.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class ResourceExhaustedError(AisembleError):
    """A limit (queue, size, concurrency, quota) was reached; retry_after_s says when to retry."""

    code = Code.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class UnavailableError(AisembleError):
    """An upstream or a model is not reachable now; retry_after_s says when to retry."""

    code = Code.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceededError(AisembleError):
    """The deadline passed before the work finished."""

    code = Code.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class CancelledError(AisembleError):
    """The request was cancelled."""

    code = Code.CANCELLED
    default_reason = "CANCELLED"


class PermissionDeniedError(AisembleError):
    """Access is not allowed (e.g. a path outside the configured roots)."""

    code = Code.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class UnauthenticatedError(AisembleError):
    """Credentials are missing or wrong."""

    code = Code.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class UnimplementedError(AisembleError):
    """The operation is not supported by this model or service."""

    code = Code.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


class InternalError(AisembleError):
    """A bug: logged on the server, never detailed to clients."""

    code = Code.INTERNAL
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
    """Another server's status, passed through unchanged: its code, message and packed google.rpc.Status."""

    def __init__(self, code: int, message: str, status_bytes: bytes = b"") -> None:
        super().__init__(message, reason="UPSTREAM")
        self.code = Code.of(code)
        #: The serialized google.rpc.Status as the upstream sent it (empty: build one from code and message).
        self.status_bytes = status_bytes
