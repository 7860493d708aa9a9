"""inference.GRPCInferenceService (KServe v2 / Open Inference Protocol) on the gateway's port, over the gateway's path.

ModelInfer turns the input tensors into the typed request of the model's task (gateway/kserve_tasks.py) and calls
it exactly as NlpService / VisionService calls are served here (Gateway.unary: the key's models, `auto`, cache,
stats, forwarding), then writes the typed answer as output tensors: in raw_output_contents when the request came
raw (as tritonclient sends it), else in typed contents. Bad tensors are INVALID_ARGUMENT naming the request field
and the tensor (gateway/kserve_tensors.py); an unknown model NOT_FOUND; a model of another task UNIMPLEMENTED.

ModelStreamInfer (Triton's streaming extension, which tritonclient's stream_infer calls): every request of the
stream is a ModelInfer, answered in the order sent; up to `STREAM_INFLIGHT` run at once, so that a stream of
embedding requests shares the model's batches. A request that fails is answered with its `error_message` and the
stream goes on, as Triton does.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version

import grpc
from google.rpc import code_pb2
from grpc import aio
from inference import model_stream_infer_pb2 as stream_pb
from inference import open_inference_grpc_pb2 as pb
from inference import open_inference_grpc_pb2_grpc as pb_grpc

from aisemble.config.models import ModelSpec
from aisemble.errors import AisembleError, Code, FieldViolation, InvalidArgumentError, NotFoundError, UpstreamError
from aisemble.hosting.streaming import in_order
from aisemble.nlp.v1 import nlp_service_pb2 as nlp
from aisemble.resolution import AUTO, Rpc
from aisemble.rpc.auth import current_principal
from aisemble.rpc.server import ServiceBinding
from aisemble.rpc.status import read_details
from gateway.kserve_tasks import SIGNATURES, Signature, signature_for_auto, signature_of
from gateway.kserve_tensors import match_inputs, read_bytes, read_texts, requested_outputs, uses_raw, write_outputs
from gateway.proxy import Gateway
from gateway.routes import ROUTES

__all__ = ["SERVER_NAME", "SERVICE", "STREAM_INFLIGHT", "KServeServicer", "kserve_binding"]

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: ServerMetadata's name; its version is the installed aisemble distribution's.
SERVER_NAME = "ai-semble"
#: ModelStreamInfer: the requests of one stream that run at once (the stream's reading waits beyond that).
STREAM_INFLIGHT = 16
_DIMENSIONS_PROBE_S = 5.0  # how long ModelMetadata waits for an embedding model's width (one short text)
_TYPED_FIELD = re.compile(r"^([a-z_]+)(?:\[(\d+)\])?(.*)$")


def _version() -> str:
    try:
        return version("aisemble")
    except PackageNotFoundError:
        return "0+unknown"


def _in_tensor_terms(error: UpstreamError, request: pb.ModelInferRequest, signature: Signature) -> AisembleError:
    """An upstream INVALID_ARGUMENT about the typed request (`texts[2]`, `image.data`) told about the tensor that
    field came from (`inputs[0]`, tensor 'text' element 2); any other error as it is."""
    if error.code != code_pb2.INVALID_ARGUMENT or not error.status_bytes:
        return error
    details = read_details(error.status_bytes)
    index_of = {tensor.name: i for i, tensor in enumerate(request.inputs)}
    reason, metadata, violations = details.reason or "INVALID_ARGUMENT", details.metadata, []
    for violation in details.violations:
        match = _TYPED_FIELD.match(violation.field)
        tensor = signature.fields.get(match.group(1)) if match else None
        if match is None or tensor is None or tensor not in index_of:
            violations.append(violation)
            continue
        element = f" element {match.group(2)}" if match.group(2) is not None else ""
        violations.append(
            FieldViolation(f"inputs[{index_of[tensor]}]", f"tensor '{tensor}'{element}: {violation.description}")
        )
    if not violations:
        return error
    message = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return InvalidArgumentError(message, reason=reason, metadata=metadata, field_violations=violations)


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The KServe v2 RPCs over one Gateway: health from its router, metadata from its registry, inference through
    its call path."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        #: (model, version) -> the embedding width, learnt from its answers (or one probe, for ModelMetadata).
        self.dimensions: dict[tuple[str, str], int] = {}

    def _model(self, name: str, model_version: str, field: str) -> tuple[ModelSpec, Signature]:
        """A named model the caller's key allows, of a task this API serves (at the version asked, if one is)."""
        if not name:
            raise InvalidArgumentError.for_field(field, "is required: the registry name of a model")
        if name == AUTO:
            raise InvalidArgumentError.for_field(
                field, "'auto' is not a model: ModelInfer picks one per call; name a registered model here"
            )
        current_principal.get().check_model(name)  # before anything about the model is looked up
        spec = self.gateway.registry.get(name)  # MODEL_NOT_FOUND
        if model_version and model_version != spec.version:
            raise NotFoundError(
                f"model '{name}' has version {spec.version} only, not {model_version}",
                reason="MODEL_VERSION_NOT_FOUND",
                metadata={"model": name, "version": model_version},
            )
        return spec, signature_of(spec.name, spec.task)

    async def _width(self, spec: ModelSpec) -> int:
        """An embedding model's width: known from an earlier answer, else asked once with one short text
        (-1 while its service cannot answer)."""
        key = (spec.name, spec.version)
        if key not in self.dimensions:
            probe = nlp.EmbedRequest(model=spec.name, texts=["dimensions"])
            try:
                router = self.gateway.router
                reply = await router.call(spec.service, Rpc.EMBED, probe, nlp.EmbedResponse, _DIMENSIONS_PROBE_S)
            except (grpc.aio.AioRpcError, AisembleError):
                return -1
            self.dimensions[key] = reply.dimensions
        return self.dimensions[key]

    async def ServerLive(self, request: pb.ServerLiveRequest, context: aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: aio.ServicerContext) -> pb.ServerReadyResponse:
        """Ready when the gateway can serve an inference: some registered model of a served task is SERVING."""
        router = self.gateway.router
        ready = any(
            router.health_of(spec.name) == "SERVING" for spec in self.gateway.registry.all() if spec.task in SIGNATURES
        )
        return pb.ServerReadyResponse(ready=ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: aio.ServicerContext) -> pb.ModelReadyResponse:
        spec, _signature = self._model(request.name, request.version, "name")
        return pb.ModelReadyResponse(ready=self.gateway.router.health_of(spec.name) == "SERVING")

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=_version(), extensions=[])

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        spec, signature = self._model(request.name, request.version, "name")
        outputs = []
        for output in signature.outputs:
            shape = (*output.shape[:-1], await self._width(spec)) if output.name == signature.sized else None
            outputs.append(output.metadata(shape))
        return pb.ModelMetadataResponse(
            name=spec.name,
            versions=[spec.version],
            platform=spec.provider,
            inputs=[tensor.metadata() for tensor in signature.inputs],
            outputs=outputs,
            properties={"task": spec.task, "service": spec.service, "description": spec.description},
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: aio.ServicerContext) -> pb.ModelInferResponse:
        name = request.model_name
        if name == AUTO:
            if request.model_version:
                raise InvalidArgumentError.for_field("model_version", "must be empty with model 'auto'")
            signature = signature_for_auto(request)
        else:
            _spec, signature = self._model(name, request.model_version, "model_name")
        positions = match_inputs(request, signature.inputs, name)
        inputs: dict[str, list[str] | list[bytes]] = {}
        for spec in signature.inputs:
            index = positions[spec.name]
            inputs[spec.name] = read_texts(request, index, spec) if spec.text else read_bytes(request, index, spec)
        wanted = requested_outputs(request, signature.outputs, name)
        typed = signature.request(name, inputs)
        try:
            answer = await self.gateway.unary(
                signature.rpc, ROUTES[signature.rpc], typed, signature.response_type, context
            )
        except UpstreamError as error:
            raise _in_tensor_terms(error, request, signature) from None
        selection = answer.selection
        if signature.sized:
            self.dimensions[(selection.model, selection.model_version)] = answer.dimensions
        reply = pb.ModelInferResponse(model_name=selection.model, model_version=selection.model_version, id=request.id)
        if selection.automatic:
            reply.parameters["selection_reason"].string_param = selection.reason
        tensors = {tensor.name: tensor for tensor in signature.answer(answer)}
        write_outputs(reply, [tensors[output] for output in wanted], raw=uses_raw(request))
        return reply

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: aio.ServicerContext
    ) -> AsyncIterator[stream_pb.ModelStreamInferResponse]:
        async def answer(request: pb.ModelInferRequest) -> stream_pb.ModelStreamInferResponse:
            try:
                return stream_pb.ModelStreamInferResponse(infer_response=await self.ModelInfer(request, context))
            except AisembleError as error:
                failed = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
                message = f"{Code.of(int(error.code)).name}: {error.message}"
                return stream_pb.ModelStreamInferResponse(error_message=message, infer_response=failed)

        async for reply in in_order(request_iterator, answer, lambda _request: 1, STREAM_INFLIGHT):
            yield reply


def _add_to_server(servicer: KServeServicer, server: aio.Server) -> None:
    """The Open Inference Protocol's RPCs, and ModelStreamInfer by its method path (its contract is Triton's)."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    stream = grpc.stream_stream_rpc_method_handler(
        servicer.ModelStreamInfer,
        request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=stream_pb.ModelStreamInferResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ModelStreamInfer": stream}),))


def kserve_binding(gateway: Gateway) -> ServiceBinding:
    """The KServe v2 service (with Triton's ModelStreamInfer), to serve beside the gateway's own."""
    return ServiceBinding(SERVICE, KServeServicer(gateway), _add_to_server)  # type: ignore[arg-type]
