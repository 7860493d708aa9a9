"""Domain errors map to google.rpc.Status with the right code and details."""

from google.rpc import code_pb2, error_details_pb2

from aisemble.errors import FieldViolation, InvalidArgumentError, ModelNotFoundError, ResourceExhaustedError
from aisemble.rpc.status import internal_status, to_rpc_status


def _unpack(status, kind):
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    return None


def test_model_not_found_has_error_info():
    status = to_rpc_status(ModelNotFoundError("nope", known=["b", "a"]))
    assert status.code == code_pb2.NOT_FOUND
    info = _unpack(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, info.metadata["model"]) == ("MODEL_NOT_FOUND", "aisemble", "nope")
    assert "known models: a, b" in status.message


def test_invalid_argument_carries_field_violations():
    error = InvalidArgumentError("bad", field_violations=[FieldViolation("top_p", "must be in (0, 1]")])
    status = to_rpc_status(error)
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad = _unpack(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [("top_p", "must be in (0, 1]")]


def test_resource_exhausted_carries_retry_info():
    status = to_rpc_status(ResourceExhaustedError("full", retry_after_s=1.5))
    retry = _unpack(status, error_details_pb2.RetryInfo)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (1, 500_000_000)


def test_internal_status_hides_everything_but_a_request_id():
    status = internal_status("abc123")
    assert status.code == code_pb2.INTERNAL
    assert "abc123" in status.message and "Traceback" not in status.message
