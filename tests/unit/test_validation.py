"""The shared request check: every enum field, at any depth, holding a number its enum lacks, named by its path."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2
from google.protobuf.message_factory import GetMessageClass

from aisemble.ensemble.v1 import ensemble_service_pb2 as epb
from aisemble.errors import Code, InvalidArgumentError
from aisemble.finetune.v1 import finetune_service_pb2 as fpb
from aisemble.llm.v1 import llm_service_pb2 as lpb
from aisemble.nlp.v1 import nlp_service_pb2 as npb
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.rpc.interceptors import RequestValidationInterceptor
from aisemble.rpc.status import to_rpc_status
from aisemble.rpc.validation import MAX_REPORTED, UNKNOWN_ENUM_VALUE, check_request, enum_violations, holds_enums
from aisemble.vision.v1 import vision_service_pb2 as vpb

F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, type_name: str = "", repeated: bool = False) -> F:
    field = F(name=name, number=number, type=kind, label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name
    return field


def _map_entry(name: str, key: int, value: int, value_type: str = "") -> descriptor_pb2.DescriptorProto:
    entry = descriptor_pb2.DescriptorProto(name=name, options=descriptor_pb2.MessageOptions(map_entry=True))
    entry.field.extend([_field("key", 1, key), _field("value", 2, value, value_type)])
    return entry


def _test_types():
    """A private file: Outer holds Color singular, repeated, in maps, in a oneof, in Inner and in itself; Plain
    holds no enum; Loop and Knot contain each other and reach Color only through Knot."""
    file = descriptor_pb2.FileDescriptorProto(name="validation_test.proto", package="vt", syntax="proto3")
    file.enum_type.add(name="Color").value.extend(
        [descriptor_pb2.EnumValueDescriptorProto(name=n, number=i) for i, n in enumerate(["UNSET", "RED", "BLUE"])]
    )
    inner = file.message_type.add(name="Inner")
    inner.field.extend([_field("color", 1, F.TYPE_ENUM, ".vt.Color"), _field("note", 2, F.TYPE_STRING)])
    plain = file.message_type.add(name="Plain")
    plain.field.extend(
        [
            _field("text", 1, F.TYPE_STRING),
            _field("data", 2, F.TYPE_BYTES),
            _field("texts", 3, F.TYPE_STRING, repeated=True),
            _field("count", 4, F.TYPE_INT32),
        ]
    )
    outer = file.message_type.add(name="Outer")
    outer.nested_type.extend(
        [
            _map_entry("ByNameEntry", F.TYPE_STRING, F.TYPE_ENUM, ".vt.Color"),
            _map_entry("InnersEntry", F.TYPE_INT32, F.TYPE_MESSAGE, ".vt.Inner"),
            _map_entry("NotesEntry", F.TYPE_STRING, F.TYPE_STRING),
        ]
    )
    outer.oneof_decl.add(name="choice")
    picked = _field("picked", 5, F.TYPE_ENUM, ".vt.Color")
    chosen = _field("chosen", 6, F.TYPE_MESSAGE, ".vt.Inner")
    picked.oneof_index = chosen.oneof_index = 0
    outer.field.extend(
        [
            _field("color", 1, F.TYPE_ENUM, ".vt.Color"),
            _field("colors", 2, F.TYPE_ENUM, ".vt.Color", repeated=True),
            _field("by_name", 3, F.TYPE_MESSAGE, ".vt.Outer.ByNameEntry", repeated=True),
            _field("inners", 4, F.TYPE_MESSAGE, ".vt.Outer.InnersEntry", repeated=True),
            picked,
            chosen,
            _field("items", 7, F.TYPE_MESSAGE, ".vt.Inner", repeated=True),
            _field("plain", 8, F.TYPE_MESSAGE, ".vt.Plain"),
            _field("child", 9, F.TYPE_MESSAGE, ".vt.Outer"),
            _field("notes", 10, F.TYPE_MESSAGE, ".vt.Outer.NotesEntry", repeated=True),
        ]
    )
    loop = file.message_type.add(name="Loop")
    loop.field.extend([_field("knot", 1, F.TYPE_MESSAGE, ".vt.Knot"), _field("name", 2, F.TYPE_STRING)])
    knot = file.message_type.add(name="Knot")
    knot.field.extend([_field("loop", 1, F.TYPE_MESSAGE, ".vt.Loop"), _field("color", 2, F.TYPE_ENUM, ".vt.Color")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: GetMessageClass(pool.FindMessageTypeByName(f"vt.{name}")) for name in ("Outer", "Plain", "Loop")}


TYPES = _test_types()
Outer, Plain, Loop = TYPES["Outer"], TYPES["Plain"], TYPES["Loop"]


def _paths(message) -> list[str]:
    return [v.field for v in enum_violations(message)]


def test_known_values_pass():
    message = Outer(color=1, colors=[0, 1, 2], picked=2, items=[{"color": 2}], child={"color": 1})
    message.by_name["a"] = 2
    message.inners[3].color = 1
    assert enum_violations(message) == []
    check_request(message)


def test_singular_and_repeated_enums():
    assert _paths(Outer(color=7)) == ["color"]
    assert _paths(Outer(colors=[1, -3, 2, 99])) == ["colors[1]", "colors[3]"]


def test_nested_and_repeated_messages():
    message = Outer(items=[{"color": 1}, {"color": 1}, {"color": 9}], child={"child": {"items": [{"color": 4}]}})
    assert _paths(message) == ["items[2].color", "child.child.items[0].color"]


def test_maps_of_enums_and_of_messages():
    message = Outer()
    message.by_name["b"] = 5
    message.by_name["a"] = 1
    message.by_name['say "hi"'] = 6
    message.inners[7].color = 8
    message.inners[2].color = 2
    assert _paths(message) == ['by_name["b"]', 'by_name["say \\"hi\\""]', "inners[7].color"]


def test_a_huge_map_key_is_cut_short_and_the_status_fits_in_trailers():
    from aisemble.rpc.interceptors import _bounded

    message = Outer()
    message.by_name["k" * 300_000] = 9
    message.colors.extend([7] * 7)
    assert _paths(message)[-1] == f'by_name["{"k" * 37}..."]'
    with pytest.raises(InvalidArgumentError) as caught:
        check_request(message)
    status = to_rpc_status(caught.value)
    bounded = _bounded(status)
    assert bounded.ByteSize() <= 2048 and len(bounded.message.encode()) <= 512
    assert bounded.code == Code.INVALID_ARGUMENT and len(bounded.details) == 2  # ErrorInfo and BadRequest kept
    assert _bounded(to_rpc_status(InvalidArgumentError("small"))) == to_rpc_status(InvalidArgumentError("small"))


def test_oneof_members():
    assert _paths(Outer(picked=3)) == ["picked"]
    assert _paths(Outer(chosen={"color": 3})) == ["chosen.color"]


def test_types_that_reach_an_enum_only_through_a_cycle():
    assert holds_enums(Loop.DESCRIPTOR)
    assert _paths(Loop(knot={"loop": {"knot": {"color": 5}}})) == ["knot.loop.knot.color"]


def test_a_message_without_enums_costs_nothing():
    assert not holds_enums(Plain.DESCRIPTOR)
    assert not holds_enums(npb.EmbedRequest.DESCRIPTOR)
    assert not holds_enums(vpb.DetectRequest.DESCRIPTOR)
    assert enum_violations(Plain(text="x", data=b"\0" * 1024, texts=["a"] * 256, count=-1)) == []


def test_unrelated_big_fields_are_not_walked():
    # Outer's plan names only the fields that can hold enums: the big text list of Plain is never read.
    message = Outer(plain={"texts": ["text"] * 256, "data": b"\xff" * 100_000}, color=9)
    message.notes["a"] = "b" * 10_000
    assert _paths(message) == ["color"]


def test_at_most_a_few_are_reported():
    message = Outer(colors=[9] * 100)
    assert _paths(message) == [f"colors[{i}]" for i in range(MAX_REPORTED)]
    assert len(enum_violations(message, limit=3)) == 3


def test_the_refusal_is_one_invalid_argument_with_field_violations():
    with pytest.raises(InvalidArgumentError) as caught:
        check_request(epb.RunRequest(strategy=11, completion=lpb.CompleteRequest(prompt="x")))
    error = caught.value
    assert error.code == Code.INVALID_ARGUMENT and error.reason == UNKNOWN_ENUM_VALUE
    assert error.metadata == {"field": "strategy", "enum": "aisemble.ensemble.v1.Strategy", "number": "11"}
    (violation,) = error.field_violations
    assert violation.field == "strategy"
    assert "11 is not a value of aisemble.ensemble.v1.Strategy" in violation.description
    assert "STRATEGY_WEIGHTED_BOX_FUSION (4)" in violation.description
    status = to_rpc_status(error)
    assert status.code == Code.INVALID_ARGUMENT and "strategy" in status.message


def test_the_contracts_enums_at_their_paths():
    chat = lpb.ChatRequest(messages=[lpb.ChatMessage(role=2), lpb.ChatMessage(role=-5)])
    assert _paths(chat) == ["messages[1].role"]
    register = rpb.RegisterModelRequest(model=rpb.Model(name="m", task=99, health=7))
    register.model.params.fields["a"].list_value.values.add().null_value = 3  # google.protobuf.NullValue
    assert _paths(register) == [
        "model.task",
        'model.params.fields["a"].list_value.values[0].null_value',
        "model.health",
    ]
    assert _paths(vpb.StreamDetectRequest(backpressure_policy=12)) == ["backpressure_policy"]
    assert holds_enums(struct_pb2.Struct.DESCRIPTOR)


# The interceptor that applies the check to every RPC, driven without a server: its wrappers are plain coroutines.
RUN = "/aisemble.ensemble.v1.EnsembleService/Run"
STREAM_DETECT = "/aisemble.vision.v1.VisionService/StreamDetect"
UPLOAD = "/aisemble.finetune.v1.FineTuneService/UploadTrainingFile"
GOOD_FRAME, BAD_FRAME = vpb.StreamDetectRequest(frame_index=1), vpb.StreamDetectRequest(backpressure_policy=9)
GOOD_CHUNK, BAD_HEADER = fpb.UploadTrainingFileRequest(chunk=b"{}"), fpb.UploadTrainingFileRequest(header={"task": 5})


async def _frames(*frames):
    for frame in frames:
        yield frame


def test_rpcs_whose_requests_hold_no_enum_are_not_wrapped():
    async def behavior(request, context):
        return request

    interceptor = RequestValidationInterceptor()
    assert interceptor.wrap_unary("/aisemble.nlp.v1.NlpService/Embed", behavior) is behavior
    assert interceptor.wrap_unary("/grpc.health.v1.Health/Check", behavior) is behavior
    assert interceptor.wrap_unary(RUN, behavior) is not behavior
    assert interceptor.wrap_unary("/not.in.the.Pool/Method", behavior) is not behavior  # checked per message


async def test_a_bad_unary_request_never_reaches_the_servicer():
    seen = []

    async def behavior(request, context):
        seen.append(request)
        return "ok"

    unary = RequestValidationInterceptor().wrap_unary(RUN, behavior)
    assert await unary(epb.RunRequest(strategy=1), None) == "ok"
    with pytest.raises(InvalidArgumentError, match="strategy"):
        await unary(epb.RunRequest(strategy=11), None)
    assert len(seen) == 1


async def test_a_server_stream_with_a_bad_request_never_starts():
    async def behavior(request, context):
        yield "reply"

    stream = RequestValidationInterceptor().wrap_stream("/aisemble.llm.v1.LlmService/StreamChat", behavior)
    assert [r async for r in stream(lpb.StreamChatRequest(messages=[{"role": 1}]), None)] == ["reply"]
    with pytest.raises(InvalidArgumentError, match=r"messages\[0\]\.role"):
        [r async for r in stream(lpb.StreamChatRequest(messages=[{"role": 8}]), None)]


async def test_each_message_of_a_request_stream_is_checked_as_it_arrives():
    received = []

    async def behavior(requests, context):
        async for frame in requests:
            received.append(frame.frame_index)
            yield frame.frame_index

    stream = RequestValidationInterceptor().wrap_stream(STREAM_DETECT, behavior)
    replies = []
    with pytest.raises(InvalidArgumentError, match="backpressure_policy"):
        async for reply in stream(_frames(GOOD_FRAME, BAD_FRAME, GOOD_FRAME), None):
            replies.append(reply)
    assert replies == received == [1]


async def test_the_bad_message_decides_the_outcome_whoever_read_it():
    """A servicer that swallows the error, or whose upstream call read the stream and was cancelled by it
    (what gRPC does when a request iterator raises), still ends with INVALID_ARGUMENT."""

    async def swallows(requests, context):
        try:
            async for _message in requests:
                pass
        except InvalidArgumentError:
            return "swallowed"
        return "done"

    async def forwarded(requests, context):
        async def sender():  # like grpc.aio's request consumer: it cancels the call when the iterator raises
            try:
                async for _message in requests:
                    pass
            except InvalidArgumentError:
                call.cancel()

        call = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(sender())
        try:
            return await call
        finally:
            await task

    interceptor = RequestValidationInterceptor()
    for behavior in (swallows, forwarded):
        unary = interceptor.wrap_unary(UPLOAD, behavior)
        with pytest.raises(InvalidArgumentError, match=r"header\.task"):
            await unary(_frames(GOOD_CHUNK, BAD_HEADER), None)
    assert await interceptor.wrap_unary(UPLOAD, swallows)(_frames(GOOD_CHUNK), None) == "done"
