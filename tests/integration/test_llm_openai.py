"""The OpenAI backend against a local OpenAI-compatible endpoint answering from the real SmolLM2 (no internet)."""

from __future__ import annotations

import logging

import grpc
import pytest

from aisemble.config.models import model_from_mapping
from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from services.llm.app import build_server
from tests.conftest import status_details
from tests.openai_compat import OpenAICompatibleServer

KEY = "sk-test-4f1c9e0d-secret"
CAPITAL = [pb.ChatMessage(role=pb.CHAT_ROLE_USER, content="What is the capital of France?")]


@pytest.fixture(scope="module")
def endpoint(llm):
    server, _stub, _ = llm
    with OpenAICompatibleServer(server.model_host.models["smollm2-135m"].backend, api_key=KEY) as compat:
        yield compat


@pytest.fixture
async def openai_llm(endpoint, store, start_server, monkeypatch):
    """An LLM server whose models are served through the OpenAI backend by the local endpoint."""
    monkeypatch.setenv("AISEMBLE_TEST_OPENAI_KEY", KEY)
    monkeypatch.setenv("AISEMBLE_TEST_WRONG_KEY", "sk-wrong")

    def remote(name, model_id, **extra):
        entry = {
            "task": "text-generation",
            "provider": "openai",
            "endpoint": endpoint.base_url,
            "model_id": model_id,
            "max_output_tokens": 256,
            "cost_per_token": 0.00001,
            "params": {"api_key_env": "AISEMBLE_TEST_OPENAI_KEY", **extra},
        }
        return model_from_mapping(name, entry)

    models = {
        "remote-smol": remote("remote-smol", "smollm2-local"),
        "remote-wrong-key": remote("remote-wrong-key", "smollm2-local", api_key_env="AISEMBLE_TEST_WRONG_KEY"),
        "remote-limited": remote("remote-limited", "rate-limited"),
        "remote-broken": remote("remote-broken", "broken"),
        "remote-slow": remote("remote-slow", "slow", timeout_s=0.5),
        "remote-down": model_from_mapping(
            "remote-down",
            {
                "task": "text-generation",
                "provider": "openai",
                "endpoint": "http://127.0.0.1:9/v1",
                "params": {"api_key_env": "AISEMBLE_TEST_OPENAI_KEY"},
            },
        ),
    }
    channel = await start_server(build_server(ServerConfig(name="llm"), None, models, store=store))
    return llm_service_pb2_grpc.LlmServiceStub(channel)


async def test_stream_chat_through_the_openai_wire_protocol(openai_llm, endpoint):
    replies = [
        r
        async for r in openai_llm.StreamChat(
            pb.StreamChatRequest(model="remote-smol", messages=CAPITAL, max_output_tokens=24, temperature=0)
        )
    ]
    text = "".join(r.text for r in replies)
    assert "Paris" in text and len([r for r in replies if r.text]) >= 3
    assert replies[-1].finish_reason == pb.FINISH_REASON_STOP
    assert replies[-1].usage.prompt_tokens > 5 and replies[-1].usage.output_tokens > 3
    sent = endpoint.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["stream"] is True
    assert sent["body"]["model"] == "smollm2-local"


async def test_complete_uses_the_completions_endpoint(openai_llm, endpoint):
    reply = await openai_llm.Complete(
        pb.CompleteRequest(model="remote-smol", prompt="The capital of France is", max_output_tokens=5, temperature=0)
    )
    assert reply.text.strip() and reply.usage.output_tokens == 5
    assert reply.finish_reason == pb.FINISH_REASON_LENGTH
    assert endpoint.requests[-1]["path"] == "/v1/completions"


@pytest.mark.parametrize(
    ("model", "code", "retry_s"),
    [
        ("remote-wrong-key", grpc.StatusCode.UNAUTHENTICATED, None),
        ("remote-limited", grpc.StatusCode.RESOURCE_EXHAUSTED, 7),
        ("remote-broken", grpc.StatusCode.UNAVAILABLE, None),
        ("remote-down", grpc.StatusCode.UNAVAILABLE, 1),
        ("remote-slow", grpc.StatusCode.DEADLINE_EXCEEDED, None),
    ],
)
async def test_openai_errors_map_to_our_statuses(openai_llm, model, code, retry_s, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await openai_llm.Chat(pb.ChatRequest(model=model, messages=CAPITAL, max_output_tokens=4))
    assert caught.value.code() == code, caught.value.details()
    _status, details = status_details(caught.value)
    assert details["ErrorInfo"].metadata["provider"] == "openai"
    if retry_s is not None:
        assert details["RetryInfo"].retry_delay.seconds == retry_s
    assert KEY not in caplog.text and KEY not in caught.value.details()


async def test_output_formats_are_passed_to_the_provider(openai_llm, endpoint):
    """A JSON Schema goes as OpenAI's response_format, a choice list as vLLM's guided_choice; the endpoint's real
    model enforces them, so the answers follow them; tools go as the provider's own, calls come back as ours."""
    import json

    import jsonschema

    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string", "maxLength": 20}},
        "required": ["capital"],
        "additionalProperties": False,
    }
    reply = await openai_llm.Chat(
        pb.ChatRequest(
            model="remote-smol",
            messages=CAPITAL,
            max_output_tokens=40,
            temperature=0,
            response_format=pb.ResponseFormat(json_schema=json.dumps(schema)),
        )
    )
    jsonschema.validate(json.loads(reply.text), schema)
    sent = endpoint.requests[-1]["body"]
    assert (
        sent["response_format"]["type"] == "json_schema" and sent["response_format"]["json_schema"]["schema"] == schema
    )
    choice = await openai_llm.Complete(
        pb.CompleteRequest(
            model="remote-smol",
            prompt="Is Paris in France? Answer:",
            max_output_tokens=4,
            temperature=0,
            response_format=pb.ResponseFormat(choice=pb.Choices(choices=["yes", "no"])),
        )
    )
    assert choice.text in ("yes", "no") and endpoint.requests[-1]["body"]["guided_choice"] == ["yes", "no"]

    weather = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    tools = [pb.Tool(name="get_weather", description="Weather in a city", parameters=json.dumps(weather))]
    question = [pb.ChatMessage(role=pb.CHAT_ROLE_USER, content="What is the weather in Paris?")]
    call = await openai_llm.Chat(
        pb.ChatRequest(
            model="remote-smol",
            messages=question,
            tools=tools,
            tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED),
            max_output_tokens=40,
            temperature=0,
        )
    )
    sent = endpoint.requests[-1]["body"]
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "required"
    assert call.finish_reason == pb.FINISH_REASON_TOOL_CALLS and call.tool_calls[0].name == "get_weather"
    jsonschema.validate(json.loads(call.tool_calls[0].arguments), weather)
    answer = await openai_llm.Chat(
        pb.ChatRequest(
            model="remote-smol",
            messages=[
                *question,
                pb.ChatMessage(role=pb.CHAT_ROLE_ASSISTANT, tool_calls=call.tool_calls),
                pb.ChatMessage(role=pb.CHAT_ROLE_TOOL, tool_call_id=call.tool_calls[0].id, content="sunny, 24 C"),
            ],
            tools=tools,
            tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE),
            max_output_tokens=12,
            temperature=0,
        )
    )
    sent = endpoint.requests[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.tool_calls[0].id and sent[2]["tool_call_id"] == call.tool_calls[0].id
    assert answer.text and not answer.tool_calls
