"""Structured output on the real SmolLM2 (both backends) through gRPC: every answer follows its format, constrained
and free sequences share a batch, bad formats are refused before any token."""

from __future__ import annotations

import asyncio
import json
import re

import grpc
import jsonschema
import pytest

from aisemble.llm.v1 import llm_service_pb2 as pb
from tests.conftest import status_details
from tests.integration.conftest import LLM_MODELS

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "role", "address"],
    "additionalProperties": False,
}
PEOPLE = [
    "Alice, a 34-year-old administrator from Paris",
    "Bob, 19, a guest visiting Lyon",
    "Chen Wei, user, 45, lives in Shanghai",
    "Dana, an admin aged 52 in Berlin",
    "Eve, a user of 27 from Madrid",
    "Farid, 61, guest, Cairo",
    "Grace, 40, administrator in Boston",
    "Hiro, 23, a user in Osaka",
    "Ines, 88, a guest in Lisbon",
    "Jon, 30, user, Oslo",
    "Kemal, 47, admin, Ankara",
    "Lena, 15, guest from Vienna",
    "Marta, 66, user in Warsaw",
    "Nia, 38, admin in Nairobi",
    "Omar, 29, guest in Dubai",
    "Priya, 33, user in Mumbai",
    "Quinn, 71, admin in Dublin",
    "Rosa, 25, guest in Rome",
    "Sven, 56, user in Stockholm",
    "Tariq, 42, admin in Karachi",
]


def _json_format(schema: object = SCHEMA) -> pb.ResponseFormat:
    return pb.ResponseFormat(json_schema=json.dumps(schema))


async def _chat(stub, model: str, content: str, fmt: pb.ResponseFormat | None, tokens: int = 120):
    request = pb.ChatRequest(
        model=model,
        messages=[pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=content)],
        max_output_tokens=tokens,
        temperature=0,
    )
    if fmt is not None:
        request.response_format.CopyFrom(fmt)
    return await stub.Chat(request, timeout=300)


@pytest.mark.parametrize("model", LLM_MODELS)
async def test_twenty_prompts_one_schema_all_valid_and_batched_with_a_free_one(llm, model):
    server, stub, _ = llm
    batcher = server.model_host.models[model].backend.batcher
    batcher.stats.max_batch_seen = 0
    prompts = [f"Describe this person as JSON: {person}." for person in PEOPLE]
    free = _chat(stub, model, "Say hello to the museum visitors.", None, tokens=12)
    replies = await asyncio.gather(*(_chat(stub, model, p, _json_format()) for p in prompts), free)
    assert batcher.stats.max_batch_seen >= 8, "the constrained sequences were not batched"
    *constrained, unconstrained = replies
    for prompt, reply in zip(prompts, constrained, strict=True):
        assert reply.finish_reason == pb.FINISH_REASON_STOP, (prompt, reply.text)
        jsonschema.validate(json.loads(reply.text), SCHEMA)
    assert unconstrained.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    assert unconstrained.text and not unconstrained.text.lstrip().startswith("{")


@pytest.mark.parametrize("model", LLM_MODELS)
async def test_a_regex_and_a_choice_list_always_match(llm, model):
    _server, stub, _ = llm
    date = pb.ResponseFormat(regex=r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
    choice = pb.ResponseFormat(choice=pb.Choices(choices=["yes", "no", "maybe"]))
    questions = ["When did the first moon landing happen?", "What is today's date?", "Name a date in 1999."]
    for question in questions:
        reply = await _chat(stub, model, question, date, tokens=16)
        assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", reply.text), reply.text
        assert reply.finish_reason == pb.FINISH_REASON_STOP
    for question in ["Is the sky blue?", "Can fish fly?", "Will it rain tomorrow?"]:
        reply = await _chat(stub, model, question, choice, tokens=8)
        assert reply.text in ("yes", "no", "maybe"), reply.text


@pytest.mark.parametrize("model", LLM_MODELS)
async def test_a_format_cut_short_by_max_output_tokens_says_length(llm, model):
    _server, stub, _ = llm
    reply = await _chat(stub, model, f"Describe this person as JSON: {PEOPLE[0]}.", _json_format(), tokens=4)
    assert reply.finish_reason == pb.FINISH_REASON_LENGTH and reply.usage.output_tokens == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.text)


@pytest.mark.parametrize(
    ("fmt", "field", "words"),
    [
        (pb.ResponseFormat(json_schema="{not json"), "response_format.json_schema", "not valid JSON"),
        (pb.ResponseFormat(json_schema="[1, 2]"), "response_format.json_schema", "must be a JSON Schema"),
        (_json_format({"type": "array", "uniqueItems": True}), "response_format.json_schema", "uniqueItems"),
        (pb.ResponseFormat(regex="(abc"), "response_format.regex", "unclosed group"),
        (pb.ResponseFormat(choice=pb.Choices()), "response_format.choice.choices", "at least one"),
        (pb.ResponseFormat(choice=pb.Choices(choices=["a", "a"])), "response_format.choice.choices", "duplicates"),
        (pb.ResponseFormat(), "response_format", "set one of"),
    ],
)
async def test_a_bad_format_is_invalid_argument_naming_the_field(llm, fmt, field, words):
    _server, stub, _ = llm
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _chat(stub, LLM_MODELS[-1], "Hello", fmt, tokens=8)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _status, details = status_details(caught.value)
    violations = {v.field: v.description for v in details["BadRequest"].field_violations}
    assert field in violations and words in violations[field], violations


async def test_a_streamed_json_answer_concatenates_to_valid_json(llm):
    _server, stub, _ = llm
    request = pb.StreamChatRequest(
        model=LLM_MODELS[-1],
        messages=[pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=f"Describe as JSON: {PEOPLE[3]}.")],
        max_output_tokens=120,
        temperature=0.7,
        seed=7,
        response_format=_json_format(),
    )
    replies = [reply async for reply in stub.StreamChat(request, timeout=300)]
    assert len(replies) > 3 and replies[-1].finish_reason == pb.FINISH_REASON_STOP
    jsonschema.validate(json.loads("".join(r.text for r in replies)), SCHEMA)


async def test_a_format_past_the_grammar_limit_is_resource_exhausted(llm):
    _server, stub, _ = llm
    huge = pb.ResponseFormat(choice=pb.Choices(choices=[f"answer number {i:06d}" for i in range(4000)]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _chat(stub, LLM_MODELS[-1], "Pick one.", huge, tokens=8)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _status, details = status_details(caught.value)
    assert details["ErrorInfo"].reason == "GRAMMAR_TOO_LARGE" and details["ErrorInfo"].metadata["limit"] == "65536"
