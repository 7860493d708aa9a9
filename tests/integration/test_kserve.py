"""The KServe v2 API on the gateway's port, called with tritonclient over the real NLP and vision services."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from inference import open_inference_grpc_pb2 as pb
from inference import open_inference_grpc_pb2_grpc as pb_grpc

from aisemble.common.v1 import common_pb2
from aisemble.config.models import ModelSpec
from aisemble.nlp.v1 import nlp_service_pb2, nlp_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from aisemble.security.keys import KeyFile
from aisemble.vision.v1 import vision_service_pb2, vision_service_pb2_grpc
from gateway.kserve_tensors import join_bytes
from services.nlp.app import build_server as build_nlp_server
from tests.assets.pictures import bus_jpg
from tests.conftest import status_details
from tests.integration.conftest import build_gateway, mesh_for, wait_serving, write_registry
from tests.integration.test_nlp_classifier import CLASSIFIER, HELD_OUT, classifier_store  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

SERVED = ("minilm-l6", "minilm-l6-int8", "langid", "yolov8-fall")
REGISTERED = (*SERVED, "smollm2-135m")
TEXTS = ["The patient shows symptoms of fever.", "Bonjour tout le monde, comment allez-vous ?", "東京は日本の首都です"]


def _tritonclient() -> tuple[ModuleType, ModuleType]:
    """tritonclient.grpc and its aio client, their messages built in a pool of their own.

    tritonclient registers the same `inference.*` names as our gen/inference in protobuf's default pool, which
    refuses a second definition ("duplicate symbol 'inference.ServerLiveRequest'", kserve/kserve#3099); its
    client here stands where a user's would, in another process. Wire-compatible messages in either pool."""
    if "tritonclient.grpc" not in sys.modules:
        importlib.import_module("google.protobuf.json_format")  # registers nothing, but must not land in ours
        private, default = descriptor_pool.DescriptorPool(), descriptor_pool.Default
        descriptor_pool.Default = lambda: private  # the generated modules look it up as they load
        try:
            importlib.import_module("tritonclient.grpc.aio")
        finally:
            descriptor_pool.Default = default
    return sys.modules["tritonclient.grpc"], sys.modules["tritonclient.grpc.aio"]


triton, triton_aio = _tritonclient()
from tritonclient.utils import InferenceServerException  # noqa: E402 (loaded by _tritonclient)


def gateway_over(registry, store, tmp_path, nlp_port: int, vision_port: int, names=REGISTERED, keys=None):
    """The one place this module builds a gateway: its registry holds `names`, its nlp and vision upstreams are the
    given servers (llm: a closed port)."""
    path = write_registry(tmp_path / "models.yaml", registry, names)
    mesh = mesh_for(nlp=[f"127.0.0.1:{nlp_port}"], vision=[f"127.0.0.1:{vision_port}"], llm=["127.0.0.1:9"])
    return build_gateway(ServerConfig(name="gateway"), mesh, registry_path=path, store_root=store.root, keys=keys)


@pytest.fixture
async def gateway(nlp, vision, registry, store, tmp_path, start_server):
    """A gateway over the session's NLP and vision servers. Yields (server, channel, tritonclient aio client)."""
    server = gateway_over(registry, store, tmp_path, nlp[0].port, vision[0].port)
    channel = await start_server(server)
    await wait_serving(server, SERVED)
    client = triton_aio.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield server, channel, client
    await client.close()


def _text_input(texts, name="text"):
    tensor = triton.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    return tensor


def _image_input(data: bytes):
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=np.object_))
    return tensor


async def _kserve_error(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """The AioRpcError a raw-stub call ends with, checked to be `code`."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


# --- health and metadata ---


async def test_server_live_ready_and_metadata(gateway):
    _server, _channel, client = gateway
    assert await client.is_server_live() and await client.is_server_ready()
    metadata = await client.get_server_metadata()
    assert metadata.name == "ai-semble" and metadata.version and list(metadata.extensions) == []
    assert await client.is_model_ready("minilm-l6") and await client.is_model_ready("yolov8-fall")


async def test_model_metadata_describes_each_task(gateway):
    _server, channel, client = gateway
    embed = await client.get_model_metadata("minilm-l6")
    assert embed.name == "minilm-l6" and list(embed.versions) == ["1"] and embed.platform == "onnxruntime"
    assert [(t.name, t.datatype, list(t.shape)) for t in embed.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in embed.outputs] == [("embedding", "FP32", [-1, 384])]
    langid = await client.get_model_metadata("langid")
    assert [(t.name, t.datatype, list(t.shape)) for t in langid.outputs] == [
        ("language", "BYTES", [-1]),
        ("score", "FP32", [-1]),
    ]
    detector = await client.get_model_metadata("yolov8-fall")
    assert [(t.name, t.datatype, list(t.shape)) for t in detector.inputs] == [("image", "BYTES", [1])]
    assert [(t.name, list(t.shape)) for t in detector.outputs] == [
        ("boxes", [-1, 4]),
        ("scores", [-1]),
        ("classes", [-1]),
    ]
    ours = await pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(pb.ModelMetadataRequest(name="langid"))
    assert ours.properties["task"] == "language-detection"  # the OIP field tritonclient's older file lacks


# --- inference, compared with the typed RPCs through the same gateway ---


async def test_embeddings_equal_nlp_embed(gateway):
    _server, channel, client = gateway
    result = await client.infer("minilm-l6", [_text_input(TEXTS)], request_id="req-7")
    vectors = result.as_numpy("embedding")
    typed = await nlp_service_pb2_grpc.NlpServiceStub(channel).Embed(
        nlp_service_pb2.EmbedRequest(model="minilm-l6", texts=TEXTS)
    )
    assert vectors.shape == (3, typed.dimensions) == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(vectors, np.array([e.values for e in typed.embeddings]), atol=1e-6)
    reply = result.get_response()
    assert (reply.id, reply.model_name, reply.model_version) == ("req-7", "minilm-l6", "1")


async def test_model_stream_infer_answers_each_request_in_order_and_a_bad_one_does_not_end_it(gateway):
    """tritonclient's stream_infer (Triton's ModelStreamInfer) over embeddings: each answer in order with its id, the
    vectors NlpService.Embed gives, a failed request answered with its error while the stream goes on."""
    _server, channel, client = gateway
    batches = [TEXTS[:2], ["one more sentence"], TEXTS[1:]]

    async def requests():
        for index, texts in enumerate(batches[:2]):
            yield {"model_name": "minilm-l6", "inputs": [_text_input(texts)], "request_id": f"r{index}"}
        yield {"model_name": "no-such-model", "inputs": [_text_input(["x"])], "request_id": "bad"}
        yield {"model_name": "minilm-l6", "inputs": [_text_input(batches[2])], "request_id": "r2"}

    answers = [answer async for answer in client.stream_infer(requests())]
    assert len(answers) == 4
    results = [result for result, error in answers]
    errors = [error for result, error in answers]
    assert errors[0] is None and errors[1] is None and errors[3] is None
    assert "NOT_FOUND" in str(errors[2]) and "no-such-model" in str(errors[2])
    stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
    answered = [results[0], results[1], results[3]]
    for result, texts, expected_id in zip(answered, batches, ["r0", "r1", "r2"], strict=True):
        assert result.get_response().id == expected_id
        typed = await stub.Embed(nlp_service_pb2.EmbedRequest(model="minilm-l6", texts=texts))
        assert np.allclose(result.as_numpy("embedding"), np.array([e.values for e in typed.embeddings]), atol=1e-6)


async def test_language_detection_and_requested_outputs(gateway):
    _server, channel, client = gateway
    result = await client.infer("langid", [_text_input(TEXTS)])
    typed = await nlp_service_pb2_grpc.NlpServiceStub(channel).DetectLanguage(
        nlp_service_pb2.DetectLanguageRequest(model="langid", texts=TEXTS)
    )
    assert [code.decode() for code in result.as_numpy("language")] == [r.language_code for r in typed.results]
    assert [code.decode() for code in result.as_numpy("language")] == ["en", "fr", "ja"]
    assert np.allclose(result.as_numpy("score"), [r.score for r in typed.results])
    only = await client.infer("langid", [_text_input(TEXTS[:1])], outputs=[triton.InferRequestedOutput("score")])
    assert [o.name for o in only.get_response().outputs] == ["score"] and only.as_numpy("language") is None


async def test_detection_equals_vision_detect(gateway):
    _server, channel, client = gateway
    result = await client.infer("yolov8-fall", [_image_input(bus_jpg())])
    typed = await vision_service_pb2_grpc.VisionServiceStub(channel).Detect(
        vision_service_pb2.DetectRequest(model="yolov8-fall", image=common_pb2.Image(data=bus_jpg()))
    )
    boxes = result.as_numpy("boxes")
    assert boxes.shape == (len(typed.detections), 4) and len(typed.detections) >= 3
    expected = [[d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max] for d in typed.detections]
    assert np.allclose(boxes, expected) and np.allclose(result.as_numpy("scores"), [d.score for d in typed.detections])
    assert [c.decode() for c in result.as_numpy("classes")] == [d.class_name for d in typed.detections]


async def test_auto_picks_a_model_of_the_task(gateway):
    _server, channel, client = gateway
    result = await client.infer("auto", [_text_input(TEXTS[:1])], parameters={"task": "embedding"})
    reply = result.get_response()
    assert reply.model_name in ("minilm-l6", "minilm-l6-int8") and reply.parameters["selection_reason"].string_param
    typed = await nlp_service_pb2_grpc.NlpServiceStub(channel).Embed(
        nlp_service_pb2.EmbedRequest(model=reply.model_name, texts=TEXTS[:1])
    )
    assert np.allclose(result.as_numpy("embedding"), [typed.embeddings[0].values], atol=1e-6)
    by_outputs = await client.infer(
        "auto", [_text_input(TEXTS[1:2])], outputs=[triton.InferRequestedOutput("language")]
    )
    assert by_outputs.get_response().model_name == "langid" and by_outputs.as_numpy("language")[0] == b"fr"
    by_input = await client.infer("auto", [_image_input(bus_jpg())])
    assert by_input.get_response().model_name == "yolov8-fall" and len(by_input.as_numpy("boxes")) >= 3


async def test_typed_contents_answer_in_typed_contents(gateway):
    _server, channel, client = gateway
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="text",
        datatype="BYTES",
        shape=[2],
        contents=pb.InferTensorContents(bytes_contents=[t.encode() for t in TEXTS[:2]]),
    )
    typed = await stub.ModelInfer(pb.ModelInferRequest(model_name="minilm-l6", id="typed", inputs=[tensor]))
    assert not typed.raw_output_contents and typed.id == "typed"
    [output] = typed.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("embedding", "FP32", [2, 384])
    raw = await client.infer("minilm-l6", [_text_input(TEXTS[:2])])
    assert np.allclose(np.array(output.contents.fp32_contents).reshape(2, 384), raw.as_numpy("embedding"))
    langid = await stub.ModelInfer(pb.ModelInferRequest(model_name="langid", inputs=[tensor]))
    assert list(langid.outputs[0].contents.bytes_contents) == [b"en", b"fr"]


async def test_the_trained_classifier_answers_its_top_label(
    vision,
    registry,
    classifier_store,  # noqa: F811 (the fixture imported above)
    tmp_path,
    start_server,
):
    spec = ModelSpec(
        name=CLASSIFIER, task="text-classification", provider="onnxruntime", service="nlp", model_path=CLASSIFIER
    )
    classifier = build_nlp_server(ServerConfig(name="nlp-clf"), None, {CLASSIFIER: spec}, store=classifier_store)
    await start_server(classifier)
    with_classifier = {**registry, CLASSIFIER: spec}
    server = gateway_over(with_classifier, classifier_store, tmp_path, classifier.port, vision[0].port, [CLASSIFIER])
    channel = await start_server(server)
    await wait_serving(server, [CLASSIFIER])
    texts = list(HELD_OUT)
    async with triton_aio.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
        result = await client.infer(CLASSIFIER, [_text_input(texts)])
    typed = await nlp_service_pb2_grpc.NlpServiceStub(channel).Classify(
        nlp_service_pb2.ClassifyRequest(model=CLASSIFIER, texts=texts)
    )
    assert [label.decode() for label in result.as_numpy("label")] == [HELD_OUT[t] for t in texts]
    assert [label.decode() for label in result.as_numpy("label")] == [r.labels[0].label for r in typed.results]
    assert np.allclose(result.as_numpy("score"), [r.labels[0].score for r in typed.results])


# --- errors ---


def _infer(model="minilm-l6", **fields) -> pb.ModelInferRequest:
    text = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1])
    defaults = {"inputs": [text], "raw_input_contents": [join_bytes([b"hello"])]}
    return pb.ModelInferRequest(model_name=model, **{**defaults, **fields})


def _tensor(name="text", datatype="BYTES", shape=(1,), **contents):
    typed = pb.InferTensorContents(**contents) if contents else None
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(shape), contents=typed)


BAD_TENSORS = {
    "wrong datatype": (_infer(inputs=[_tensor(datatype="FP32")]), "inputs[0].datatype", "'text'"),
    "wrong shape": (_infer(inputs=[_tensor(shape=(1, 1))]), "inputs[0].shape", "'text'"),
    "no elements": (_infer(inputs=[_tensor(shape=(0,))], raw_input_contents=[b""]), "inputs[0].shape", "'text'"),
    "element count": (_infer(inputs=[_tensor(shape=(2,))]), "raw_input_contents[0]", "needs 2"),
    "missing input": (_infer(inputs=[], raw_input_contents=[]), "inputs", "'text' is missing"),
    "unknown input": (_infer(inputs=[_tensor(name="prompt")]), "inputs[0].name", "'prompt'"),
    "raw and typed": (_infer(inputs=[_tensor(bytes_contents=[b"hi"])]), "inputs[0].contents", "'text'"),
    "typed of another type": (
        _infer(inputs=[_tensor(fp32_contents=[1.0])], raw_input_contents=[]),
        "inputs[0].contents",
        "fp32_contents",
    ),
    "raw not length-prefixed": (_infer(raw_input_contents=[b"\x09\x00\x00\x00hi"]), "raw_input_contents[0]", "'text'"),
    "not UTF-8": (_infer(raw_input_contents=[join_bytes([b"\xff\xfe"])]), "raw_input_contents[0]", "not UTF-8"),
    "blank text (the service refuses it)": (_infer(raw_input_contents=[join_bytes([b"  "])]), "inputs[0]", "'text'"),
    "unknown output": (
        _infer(outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="logits")]),
        "outputs[0].name",
        "'logits'",
    ),
    "not an image": (
        _infer("yolov8-fall", inputs=[_tensor(name="image")], raw_input_contents=[join_bytes([b"not an image"])]),
        "inputs[0]",
        "tensor 'image'",
    ),
    "auto without a task": (_infer("auto"), 'parameters["task"]', "embedding"),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
async def test_bad_tensors_are_invalid_argument_naming_the_tensor(gateway, case):
    _server, channel, _client = gateway
    request, field, mentions = BAD_TENSORS[case]
    error = await _kserve_error(
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT
    )
    [violation] = status_details(error)[1]["BadRequest"].field_violations
    assert violation.field == field and mentions in violation.description, violation


async def test_unknown_model_and_other_tasks(gateway):
    _server, channel, client = gateway
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    error = await _kserve_error(stub.ModelInfer(_infer("gpt-17")), grpc.StatusCode.NOT_FOUND)
    assert status_details(error)[1]["ErrorInfo"].reason == "MODEL_NOT_FOUND"
    await _kserve_error(stub.ModelMetadata(pb.ModelMetadataRequest(name="gpt-17")), grpc.StatusCode.NOT_FOUND)
    await _kserve_error(stub.ModelReady(pb.ModelReadyRequest(name="minilm-l6", version="9")), grpc.StatusCode.NOT_FOUND)
    error = await _kserve_error(stub.ModelInfer(_infer("smollm2-135m")), grpc.StatusCode.UNIMPLEMENTED)
    assert "text-generation model" in error.details() and "embedding" in error.details()
    assert status_details(error)[1]["ErrorInfo"].reason == "KSERVE_TASK_NOT_SERVED"
    with pytest.raises(InferenceServerException) as caught:
        await client.get_model_metadata("smollm2-135m")
    assert caught.value.status() == "StatusCode.UNIMPLEMENTED"


async def test_a_key_limited_to_another_model_is_denied(nlp, vision, registry, store, tmp_path, start_server):
    keys = KeyFile(tmp_path / "keys.json")
    _record, secret = keys.create("user", models=["langid"])
    server = gateway_over(registry, store, tmp_path, nlp[0].port, vision[0].port, keys=keys)
    await start_server(server)
    await wait_serving(server, SERVED)
    headers = {"authorization": f"Bearer {secret}"}
    async with triton_aio.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
        allowed = await client.infer("langid", [_text_input(TEXTS[:1])], headers=headers)
        assert allowed.as_numpy("language")[0] == b"en"
        for call in (
            client.infer("minilm-l6", [_text_input(TEXTS[:1])], headers=headers),
            client.get_model_metadata("minilm-l6", headers=headers),
        ):
            with pytest.raises(InferenceServerException) as caught:
                await call
            assert caught.value.status() == "StatusCode.PERMISSION_DENIED", caught.value
        with pytest.raises(InferenceServerException) as caught:
            await client.infer("langid", [_text_input(TEXTS[:1])])
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
