"""Tool calling in chat on the real SmolLM2 (both backends) through gRPC: calls follow their tool's schema, stream as
deltas, their results go back as tool turns; bad tool definitions are refused before any token."""

from __future__ import annotations

import json

import grpc
import jsonschema
import pytest

from aisemble.llm.v1 import llm_service_pb2 as pb
from tests.conftest import status_details
from tests.integration.conftest import LLM_MODELS

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
TOOLS = [
    pb.Tool(name="get_weather", description="The current weather in a city.", parameters=json.dumps(WEATHER)),
    pb.Tool(name="add", description="Adds two integers.", parameters=json.dumps(ADD)),
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}


def _user(text: str) -> pb.ChatMessage:
    return pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=text)


def _request(model: str, messages, choice: pb.ToolChoice | None, tokens: int = 80, **fields) -> dict:
    request = {"model": model, "messages": messages, "max_output_tokens": tokens, "temperature": 0, "tools": TOOLS}
    if choice is not None:
        request["tool_choice"] = choice
    return {**request, **fields}


@pytest.mark.parametrize("model", LLM_MODELS)
async def test_a_required_call_names_a_tool_and_its_arguments_validate(llm, model):
    _server, stub, _ = llm
    required = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)
    for question in ["What is the weather in Paris right now?", "What is 12 plus 30?"]:
        reply = await stub.Chat(pb.ChatRequest(**_request(model, [_user(question)], required)), timeout=300)
        assert reply.finish_reason == pb.FINISH_REASON_TOOL_CALLS and reply.text == "", reply
        [call] = reply.tool_calls
        assert call.name in SCHEMAS and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


@pytest.mark.parametrize("model", LLM_MODELS)
async def test_a_named_call_streams_as_deltas_that_join_into_valid_arguments(llm, model):
    _server, stub, _ = llm
    named = pb.ToolChoice(name="add")
    request = pb.StreamChatRequest(**_request(model, [_user("Add 7 and 35 for me.")], named))
    replies = [reply async for reply in stub.StreamChat(request, timeout=300)]
    deltas = [d for reply in replies for d in reply.tool_calls]
    assert deltas[0].name == "add" and deltas[0].id.startswith("call_") and all(d.index == 0 for d in deltas)
    assert not any(d.name for d in deltas[1:]) and len(deltas) >= 3  # the arguments arrive in pieces
    jsonschema.validate(json.loads("".join(d.arguments for d in deltas)), ADD)
    assert replies[-1].finish_reason == pb.FINISH_REASON_TOOL_CALLS and "".join(r.text for r in replies) == ""


@pytest.mark.parametrize("model", LLM_MODELS)
async def test_a_tool_result_goes_back_and_the_model_answers_in_text(llm, model):
    _server, stub, _ = llm
    question = _user("What is the weather in Oslo?")
    first = await stub.Chat(
        pb.ChatRequest(**_request(model, [question], pb.ToolChoice(name="get_weather"))), timeout=300
    )
    [call] = first.tool_calls
    messages = [
        question,
        pb.ChatMessage(role=pb.CHAT_ROLE_ASSISTANT, tool_calls=[call]),
        pb.ChatMessage(role=pb.CHAT_ROLE_TOOL, tool_call_id=call.id, content='{"temperature": -3, "sky": "snow"}'),
    ]
    none = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)
    answer = await stub.Chat(pb.ChatRequest(**_request(model, messages, none, tokens=24)), timeout=300)
    assert answer.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH) and answer.text
    assert not answer.tool_calls


@pytest.mark.parametrize("model", LLM_MODELS)
async def test_auto_gives_either_a_valid_call_or_text(llm, model):
    _server, stub, _ = llm
    for question in ["What is the weather in Rome?", "Write one sentence about the sea."]:
        reply = await stub.Chat(pb.ChatRequest(**_request(model, [_user(question)], None)), timeout=300)
        if reply.tool_calls:
            assert reply.finish_reason == pb.FINISH_REASON_TOOL_CALLS
            jsonschema.validate(json.loads(reply.tool_calls[0].arguments), SCHEMAS[reply.tool_calls[0].name])
        else:
            assert reply.text and not reply.text.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tools": [TOOLS[0], TOOLS[0]]}, "tools[1].name"),
        ({"tools": [pb.Tool(name="bad name")]}, "tools[0].name"),
        ({"tools": [pb.Tool(name="f", parameters="{oops")]}, "tools[0].parameters"),
        ({"tools": [pb.Tool(name="f", parameters='{"type": "string"}')]}, "tools[0].parameters"),
        ({"tool_choice": pb.ToolChoice(name="missing")}, "tool_choice.name"),
        ({"response_format": pb.ResponseFormat(regex="[a-z]+")}, "response_format"),
        ({"messages": [pb.ChatMessage(role=pb.CHAT_ROLE_TOOL, content="18")]}, "messages[0].tool_call_id"),
    ],
)
async def test_bad_tools_are_invalid_argument_naming_the_field(llm, fields, field):
    _server, stub, _ = llm
    request = {**_request(LLM_MODELS[-1], [_user("Hi")], None, tokens=8), **fields}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(pb.ChatRequest(**request), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _status, details = status_details(caught.value)
    assert field in {v.field for v in details["BadRequest"].field_violations}, details["BadRequest"]
