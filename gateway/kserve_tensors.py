"""KServe v2 tensors: input tensors read from a ModelInferRequest (raw or typed), output tensors written to a reply."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from inference import open_inference_grpc_pb2 as pb

from aisemble.errors import InvalidArgumentError

__all__ = [
    "BYTES",
    "FP32",
    "OutputTensor",
    "TensorSpec",
    "join_bytes",
    "match_inputs",
    "read_bytes",
    "read_texts",
    "requested_outputs",
    "split_bytes",
    "uses_raw",
    "write_outputs",
]

BYTES = "BYTES"
FP32 = "FP32"
_LENGTH = struct.Struct("<I")  # a BYTES element in raw form: its length, 4 bytes little-endian, then the bytes
_TYPED_FIELDS = ("bool", "int", "int64", "uint", "uint64", "fp32", "fp64", "bytes")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor a model takes or gives: its name, datatype and shape (-1: any size); `text`: BYTES elements that
    must be UTF-8 text."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    text: bool = False

    def shape_text(self) -> str:
        """The shape as the errors show it ([-1] reads [n])."""
        return "[" + ", ".join("n" if d == -1 else str(d) for d in self.shape) + "]"

    def metadata(self, shape: tuple[int, ...] | None = None) -> pb.ModelMetadataResponse.TensorMetadata:
        """The tensor as ModelMetadata describes it."""
        return pb.ModelMetadataResponse.TensorMetadata(
            name=self.name, datatype=self.datatype, shape=list(shape or self.shape)
        )


@dataclass(frozen=True)
class OutputTensor:
    """One output: BYTES elements (a list of bytes) or FP32 values (a float32 array of `shape`)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: Sequence[bytes] | np.ndarray


def _invalid(field: str, tensor: str, description: str) -> InvalidArgumentError:
    return InvalidArgumentError.for_field(field, f"tensor '{tensor}' {description}", reason="INVALID_TENSOR")


def split_bytes(raw: bytes) -> list[bytes]:
    """The elements of a raw BYTES tensor (each a 4-byte little-endian length, then that many bytes).
    ValueError says where the buffer is malformed."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise ValueError(f"the buffer ends inside the 4-byte length of element {len(items)} (offset {offset})")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise ValueError(
                f"element {len(items)} declares {length} bytes but only {len(raw) - offset} remain (offset {offset})"
            )
        items.append(raw[offset : offset + length])
        offset += length
    return items


def join_bytes(items: Sequence[bytes]) -> bytes:
    """BYTES elements in raw form (the inverse of split_bytes)."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def uses_raw(request: pb.ModelInferRequest) -> bool:
    """Whether the request carries its tensors in raw_input_contents (the reply then answers in raw too)."""
    return len(request.raw_input_contents) > 0


def match_inputs(request: pb.ModelInferRequest, specs: Sequence[TensorSpec], model: str) -> dict[str, int]:
    """Input name -> its index in request.inputs: every spec given once, nothing else, raw or typed (not both)."""
    wanted = {spec.name: spec for spec in specs}
    takes = ", ".join(f"'{s.name}' ({s.datatype}, shape {s.shape_text()})" for s in specs)
    found: dict[str, int] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name not in wanted:
            raise InvalidArgumentError.for_field(
                f"inputs[{index}].name",
                f"'{tensor.name}' is not an input of model '{model}': it takes {takes}",
                reason="INVALID_TENSOR",
            )
        if tensor.name in found:
            raise _invalid(f"inputs[{index}].name", tensor.name, f"is given twice (also inputs[{found[tensor.name]}])")
        found[tensor.name] = index
    for spec in specs:
        if spec.name not in found:
            raise InvalidArgumentError.for_field(
                "inputs", f"tensor '{spec.name}' is missing: model '{model}' takes {takes}", reason="INVALID_TENSOR"
            )
    if uses_raw(request):
        for index, tensor in enumerate(request.inputs):
            if tensor.contents.ByteSize():
                raise _invalid(
                    f"inputs[{index}].contents",
                    tensor.name,
                    "has typed contents and the request has raw_input_contents: give every tensor one way, "
                    "raw (one raw_input_contents entry per input, in order) or typed",
                )
        if len(request.raw_input_contents) != len(request.inputs):
            raise InvalidArgumentError.for_field(
                "raw_input_contents",
                f"has {len(request.raw_input_contents)} entries for {len(request.inputs)} inputs: one per input, "
                "in the order of `inputs`",
                reason="INVALID_TENSOR",
            )
    return found


def _check_shape(index: int, tensor: pb.ModelInferRequest.InferInputTensor, spec: TensorSpec) -> int:
    """The number of elements the tensor's shape declares, once the shape fits the spec."""
    shape = tuple(tensor.shape)
    fits = len(shape) == len(spec.shape) and all(
        (want == -1 and got >= 0) or got == want for got, want in zip(shape, spec.shape, strict=True)
    )
    if not fits:
        raise _invalid(f"inputs[{index}].shape", spec.name, f"has shape {list(shape)}; it must be {spec.shape_text()}")
    count = math.prod(shape)
    if count == 0:
        raise _invalid(f"inputs[{index}].shape", spec.name, f"has shape {list(shape)}: no elements, send at least one")
    return count


def read_bytes(request: pb.ModelInferRequest, index: int, spec: TensorSpec) -> list[bytes]:
    """The elements of BYTES input `index`, checked against its spec (datatype, shape, element count)."""
    tensor = request.inputs[index]
    if tensor.datatype != spec.datatype:
        raise _invalid(
            f"inputs[{index}].datatype", spec.name, f"has datatype '{tensor.datatype}'; it must be {spec.datatype}"
        )
    count = _check_shape(index, tensor, spec)
    if uses_raw(request):
        field = f"raw_input_contents[{index}]"
        try:
            items = split_bytes(request.raw_input_contents[index])
        except ValueError as exc:
            raise _invalid(field, spec.name, f"is not a valid raw BYTES tensor: {exc}") from None
    else:
        contents = tensor.contents
        other = [
            f"{kind}_contents"
            for kind in _TYPED_FIELDS
            if kind != "bytes" and len(getattr(contents, f"{kind}_contents"))
        ]
        if other:
            raise _invalid(
                f"inputs[{index}].contents",
                spec.name,
                f"holds {', '.join(other)}; a BYTES tensor's elements go in bytes_contents (or raw_input_contents)",
            )
        field = f"inputs[{index}].contents.bytes_contents"
        items = list(contents.bytes_contents)
    if len(items) != count:
        raise _invalid(field, spec.name, f"holds {len(items)} element(s); its shape {list(tensor.shape)} needs {count}")
    return items


def read_texts(request: pb.ModelInferRequest, index: int, spec: TensorSpec) -> list[str]:
    """The elements of BYTES input `index` as UTF-8 text."""
    texts = []
    for position, item in enumerate(read_bytes(request, index, spec)):
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as exc:
            field = f"raw_input_contents[{index}]" if uses_raw(request) else f"inputs[{index}].contents.bytes_contents"
            raise _invalid(
                field, spec.name, f"element {position} is not UTF-8 text (byte {exc.start}: {exc.reason})"
            ) from None
    return texts


def requested_outputs(request: pb.ModelInferRequest, specs: Sequence[TensorSpec], model: str) -> list[str]:
    """The output names to answer with, in the order asked (none asked: every output of the model)."""
    if not request.outputs:
        return [spec.name for spec in specs]
    known = [spec.name for spec in specs]
    names: list[str] = []
    for index, output in enumerate(request.outputs):
        if output.name not in known:
            raise InvalidArgumentError.for_field(
                f"outputs[{index}].name",
                f"'{output.name}' is not an output of model '{model}': its outputs are {', '.join(known)}",
                reason="INVALID_TENSOR",
            )
        if output.name in names:
            raise _invalid(f"outputs[{index}].name", output.name, "is requested twice")
        names.append(output.name)
    return names


def write_outputs(reply: pb.ModelInferResponse, tensors: Sequence[OutputTensor], raw: bool) -> None:
    """Append the outputs to the reply: in raw_output_contents (raw) or in each tensor's typed contents."""
    for tensor in tensors:
        output = reply.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
        if tensor.datatype == BYTES:
            items = list(tensor.values)
            if raw:
                reply.raw_output_contents.append(join_bytes(items))
            else:
                output.contents.bytes_contents.extend(items)
        else:
            values = np.asarray(tensor.values, dtype="<f4")
            if raw:
                reply.raw_output_contents.append(values.tobytes())
            else:
                output.contents.fp32_contents.extend(values.ravel().tolist())
