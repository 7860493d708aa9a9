"""The tasks the KServe v2 API serves: each one's tensors, the typed request it becomes, its answer as tensors."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from google.protobuf.message import Message
from inference import open_inference_grpc_pb2 as pb

from aisemble.common.v1 import common_pb2
from aisemble.config.models import TASKS
from aisemble.errors import InvalidArgumentError, UnimplementedError
from aisemble.nlp.v1 import nlp_service_pb2 as nlp
from aisemble.resolution import Rpc
from aisemble.vision.v1 import vision_service_pb2 as vision
from gateway.kserve_tensors import BYTES, FP32, OutputTensor, TensorSpec

__all__ = ["SIGNATURES", "TASK_PARAMETER", "Signature", "signature_for_auto", "signature_of"]

#: The request parameter that names the task when the model is `auto` (a string: one of SIGNATURES).
TASK_PARAMETER = "task"

TEXT = TensorSpec("text", BYTES, (-1,), text=True)
IMAGE = TensorSpec("image", BYTES, (1,))
#: The input tensors by name: a text tensor's elements as str, any other BYTES tensor's as bytes.
Inputs = Mapping[str, Sequence[str] | Sequence[bytes]]


@dataclass(frozen=True)
class Signature:
    """One task as KServe v2 tensors, and its typed call at the gateway.

    request: (model name, inputs by tensor name) -> the typed request (its `model` set).
    answer: the typed response -> every output tensor.
    fields: the typed request's fields -> the input tensor each came from (to name the tensor in upstream errors).
    sized: the output whose last dimension is the model's own (the embedding width), if any.
    """

    task: str
    rpc: str
    response_type: type[Message]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    request: Callable[[str, Inputs], Message]
    answer: Callable[[Any], list[OutputTensor]]
    fields: Mapping[str, str]
    sized: str = ""


def _texts(inputs: Inputs) -> list[str]:
    return cast(list[str], inputs["text"])


def _image(inputs: Inputs) -> bytes:
    return cast(bytes, inputs["image"][0])


def _utf8(values: Sequence[str]) -> list[bytes]:
    return [value.encode("utf-8") for value in values]


def _fp32(values: Sequence[float] | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(shape)


def _embeddings(reply: nlp.EmbedResponse) -> list[OutputTensor]:
    shape = (len(reply.embeddings), reply.dimensions)
    values = [value for embedding in reply.embeddings for value in embedding.values]
    return [OutputTensor("embedding", FP32, shape, _fp32(values, shape))]


def _top_labels(reply: nlp.ClassifyResponse) -> list[OutputTensor]:
    tops = [result.labels[0] if result.labels else common_pb2.LabelScore() for result in reply.results]
    count = (len(tops),)
    return [
        OutputTensor("label", BYTES, count, _utf8([top.label for top in tops])),
        OutputTensor("score", FP32, count, _fp32([top.score for top in tops], count)),
    ]


def _languages(reply: nlp.DetectLanguageResponse) -> list[OutputTensor]:
    count = (len(reply.results),)
    return [
        OutputTensor("language", BYTES, count, _utf8([r.language_code for r in reply.results])),
        OutputTensor("score", FP32, count, _fp32([r.score for r in reply.results], count)),
    ]


def _detections(reply: vision.DetectResponse) -> list[OutputTensor]:
    found = reply.detections
    boxes = [v for d in found for v in (d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max)]
    return [
        OutputTensor("boxes", FP32, (len(found), 4), _fp32(boxes, (len(found), 4))),
        OutputTensor("scores", FP32, (len(found),), _fp32([d.score for d in found], (len(found),))),
        OutputTensor("classes", BYTES, (len(found),), _utf8([d.class_name for d in found])),
    ]


#: Task -> its signature. Classification answers the top label of each text; language detection the best language.
SIGNATURES: dict[str, Signature] = {
    signature.task: signature
    for signature in (
        Signature(
            "embedding",
            Rpc.EMBED,
            nlp.EmbedResponse,
            (TEXT,),
            (TensorSpec("embedding", FP32, (-1, -1)),),
            lambda model, inputs: nlp.EmbedRequest(model=model, texts=_texts(inputs)),
            _embeddings,
            {"texts": "text"},
            sized="embedding",
        ),
        Signature(
            "text-classification",
            Rpc.CLASSIFY,
            nlp.ClassifyResponse,
            (TEXT,),
            (TensorSpec("label", BYTES, (-1,)), TensorSpec("score", FP32, (-1,))),
            lambda model, inputs: nlp.ClassifyRequest(model=model, texts=_texts(inputs)),
            _top_labels,
            {"texts": "text"},
        ),
        Signature(
            "language-detection",
            Rpc.DETECT_LANGUAGE,
            nlp.DetectLanguageResponse,
            (TEXT,),
            (TensorSpec("language", BYTES, (-1,)), TensorSpec("score", FP32, (-1,))),
            lambda model, inputs: nlp.DetectLanguageRequest(model=model, texts=_texts(inputs), top_k=1),
            _languages,
            {"texts": "text"},
        ),
        Signature(
            "object-detection",
            Rpc.DETECT,
            vision.DetectResponse,
            (IMAGE,),
            (
                TensorSpec("boxes", FP32, (-1, 4)),
                TensorSpec("scores", FP32, (-1,)),
                TensorSpec("classes", BYTES, (-1,)),
            ),
            lambda model, inputs: vision.DetectRequest(model=model, image=common_pb2.Image(data=_image(inputs))),
            _detections,
            {"image": "image"},
        ),
    )
}


def _not_served(lead: str, task: str, metadata: Mapping[str, str]) -> UnimplementedError:
    return UnimplementedError(
        f"{lead}; the KServe v2 API here serves {', '.join(SIGNATURES)} models "
        "(text generation: LlmService or the OpenAI-compatible HTTP API; other tasks: their aisemble services)",
        reason="KSERVE_TASK_NOT_SERVED",
        metadata={**metadata, "task": task, "served_tasks": ",".join(SIGNATURES)},
    )


def signature_of(model: str, task: str) -> Signature:
    """The signature of a registered model's task; UNIMPLEMENTED for a task this API does not serve."""
    signature = SIGNATURES.get(task)
    if signature is None:
        article = "an" if task[:1] in "aeiou" else "a"
        raise _not_served(f"model '{model}' is {article} {task} model", task, {"model": model})
    return signature


def signature_for_auto(request: pb.ModelInferRequest) -> Signature:
    """The task `auto` picks a model of: the `task` parameter, else the one task whose outputs the request names,
    else the task its input tensors fit alone (an `image` tensor: object detection)."""
    if TASK_PARAMETER in request.parameters:
        task = request.parameters[TASK_PARAMETER].string_param
        if task in SIGNATURES:
            return SIGNATURES[task]
        field = f'parameters["{TASK_PARAMETER}"]'
        if task in TASKS:
            raise _not_served(f"{field} is '{task}'", task, {})
        raise InvalidArgumentError.for_field(field, f"must be a string parameter, one of {', '.join(SIGNATURES)}")
    named = {output.name for output in request.outputs}
    given = {tensor.name for tensor in request.inputs}
    fits = [
        s
        for s in SIGNATURES.values()
        if (named and named <= {o.name for o in s.outputs}) or (not named and given == {i.name for i in s.inputs})
    ]
    if len(fits) == 1:
        return fits[0]
    raise InvalidArgumentError.for_field(
        f'parameters["{TASK_PARAMETER}"]',
        f"is needed with model 'auto' to say which task to pick a model for: one of {', '.join(SIGNATURES)} "
        "(or request the outputs of one task, or send an 'image' tensor for object detection)",
    )
