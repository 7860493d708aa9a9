"""The OpenAI-compatible HTTP facade, called with the official openai SDK, in front of a real gateway over the real
LLM and NLP services: chat, completions, streams, embeddings, `auto`, errors of every class, disconnects, and a
model of the mesh federated through the facade itself."""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import openai
import pytest
from google.protobuf import struct_pb2

from aisemble.common.v1 import common_pb2
from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.nlp.v1 import nlp_service_pb2
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.registry.v1 import registry_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from facade.openai.app import build_app
from services.llm.app import build_server as build_llm
from tests.integration.conftest import LLM_MODELS, build_gateway, free_port, mesh_for, write_registry
from tests.integration.openai_fixtures import (
    BODY_LIMIT,
    EMBEDDER,
    ONNX,
    TORCH,
    serving,
    started_facade_mesh,
    until,
)

QUESTION = "What is the capital of France?"
MESSAGES = [{"role": "user", "content": QUESTION}]
GRPC_MESSAGES = [pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=QUESTION)]


@pytest.fixture(scope="module")
async def facade_mesh(llm, nlp, registry, store, tmp_path_factory):
    """The facade over a gateway with user keys, over the session's LLM and NLP servers."""
    async with started_facade_mesh(llm, nlp, registry, store, tmp_path_factory.mktemp("openai-facade")) as mesh:
        yield mesh


async def test_chat_matches_the_gateway_and_names_the_model(facade_mesh):
    direct = await llm_service_pb2_grpc.LlmServiceStub(facade_mesh.channel).Chat(
        pb.ChatRequest(model=ONNX, messages=GRPC_MESSAGES, max_output_tokens=8, temperature=0),
        metadata=[("authorization", f"Bearer {facade_mesh.keys['user']}")],
    )
    raw = await facade_mesh.client().chat.completions.with_raw_response.create(
        model=ONNX, messages=MESSAGES, max_tokens=8, temperature=0, seed=3, user="someone"
    )
    reply = raw.parse()
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content == direct.text
    finish = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length"}[direct.finish_reason]
    assert reply.choices[0].finish_reason == finish and reply.model == ONNX
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        direct.usage.prompt_tokens,
        direct.usage.output_tokens,
    )
    assert raw.headers["x-aisemble-model"] == ONNX and raw.headers["x-request-id"]


async def test_chat_stream_with_usage_in_the_last_chunk(facade_mesh):
    system = "You are a helpful assistant."
    direct = llm_service_pb2_grpc.LlmServiceStub(facade_mesh.channel).StreamChat(
        pb.StreamChatRequest(
            model=TORCH,
            messages=[pb.ChatMessage(role=pb.CHAT_ROLE_SYSTEM, content=system), *GRPC_MESSAGES],
            max_output_tokens=12,
            temperature=0,
            stop=["\n\n"],
        ),
        metadata=[("authorization", f"Bearer {facade_mesh.keys['user']}")],
    )
    expected = "".join([reply.text async for reply in direct])
    stream = await facade_mesh.client().chat.completions.create(
        model=TORCH,
        messages=[{"role": "developer", "content": [{"type": "text", "text": system}]}, *MESSAGES],
        max_completion_tokens=12,
        temperature=0,
        stop="\n\n",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].usage is None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected and len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 12
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    assert {c.model for c in chunks} == {TORCH} and len({c.id for c in chunks}) == 1


async def test_completion_unary_and_streamed(facade_mesh):
    client = facade_mesh.client()
    whole = await client.completions.create(model=ONNX, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 6 and whole.choices[0].text.strip()
    stream = await client.completions.create(
        model=ONNX, prompt=["The capital of France is"], max_tokens=6, temperature=0, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage is None


async def test_auto_says_which_model_and_why_in_body_and_headers(facade_mesh):
    client = facade_mesh.client()
    question = [{"role": "user", "content": "The patient has a fever. What should I do?"}]
    raw = await client.chat.completions.with_raw_response.create(model="auto", messages=question, max_tokens=4)
    reply = raw.parse()
    assert reply.model in LLM_MODELS and raw.headers["x-aisemble-model"] == reply.model
    assert "medical" in raw.headers["x-aisemble-selection-reason"]
    async with client.chat.completions.with_streaming_response.create(
        model="auto", messages=question, max_tokens=4, stream=True
    ) as response:
        assert response.headers["x-aisemble-model"] in LLM_MODELS
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = [chunk async for chunk in await response.parse()]
    assert chunks[0].model == response.headers["x-aisemble-model"]


async def test_embeddings_equal_the_nlp_service_vectors(facade_mesh, nlp):
    texts = ["The cat sat on the mat.", "Le chat est sur le tapis."]
    direct = await nlp[1].Embed(nlp_service_pb2.EmbedRequest(model=EMBEDDER, texts=texts))
    client = facade_mesh.client()
    as_floats = await client.embeddings.create(model=EMBEDDER, input=texts, encoding_format="float")
    as_base64 = await client.embeddings.create(model=EMBEDDER, input=texts)  # the SDK asks for base64
    for reply in (as_floats, as_base64):
        assert [d.embedding for d in reply.data] == [list(e.values) for e in direct.embeddings]
        assert reply.model == EMBEDDER and reply.usage.prompt_tokens == sum(e.token_count for e in direct.embeddings)
    single = await client.embeddings.create(model=EMBEDDER, input=texts[0], encoding_format="float")
    assert single.data[0].embedding == list(direct.embeddings[0].values)


async def test_models_lists_the_served_models_and_auto(facade_mesh):
    client = facade_mesh.client()
    listed = {m.id: m for m in (await client.models.list()).data}
    assert set(listed) == {"auto", *LLM_MODELS, EMBEDDER}
    assert all(m.object == "model" and m.owned_by == "aisemble" for m in listed.values())
    assert (await client.models.retrieve(ONNX)).id == ONNX
    limited = {m.id for m in (await facade_mesh.client("onnx-only").models.list()).data}
    assert limited == {"auto", ONNX}  # the gateway shows a key its models only


@pytest.mark.parametrize(
    ("arguments", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "bad name", "parameters": {}}}]}, "tools[0].name"),
        ({"tool_choice": "always"}, "tool_choice"),
        ({"response_format": {"type": "grammar"}}, "response_format.type"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"uniqueItems": True}}}},
            "response_format.json_schema",
        ),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"n": 2}, "n"),
        ({"extra_body": {"best_guess": 1}}, "best_guess"),
        ({"temperature": 7}, "temperature"),  # the LLM service's own check, named in the caller's terms
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"extra_body": {"max_tokens": "5"}}, "max_tokens"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages[0].name"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
        ),
    ],
)
async def test_unsupported_or_bad_parameters_are_400_naming_them(facade_mesh, arguments, param):
    limit = {} if "max_completion_tokens" in arguments else {"max_tokens": 4}
    arguments = {"model": ONNX, "messages": MESSAGES, **limit, **arguments}
    with pytest.raises(openai.BadRequestError) as caught:
        await facade_mesh.client().chat.completions.create(**arguments)
    assert caught.value.status_code == 400 and caught.value.param == param, caught.value.body
    assert caught.value.body["type"] == "invalid_request_error" and param.split("[")[0] in caught.value.message


async def test_response_format_json_schema_through_the_sdk(facade_mesh):
    """OpenAI's structured output: the SDK's response_format reaches the LLM service's enforced decoding, unary
    and streamed; vLLM's guided_choice works beside it."""
    import json

    import jsonschema

    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "population_millions": {"type": "integer", "minimum": 0, "maximum": 999},
        },
        "required": ["city", "population_millions"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    messages = [{"role": "user", "content": "Give the largest city of Japan as JSON."}]
    client = facade_mesh.client()
    reply = await client.chat.completions.create(
        model=ONNX, messages=messages, max_tokens=60, temperature=0, response_format=fmt
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    stream = await client.chat.completions.create(
        model=TORCH, messages=messages, max_tokens=60, temperature=0, response_format=fmt, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    jsonschema.validate(json.loads(text), schema)
    any_json = await client.chat.completions.create(
        model=ONNX, messages=messages, max_tokens=60, temperature=0, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(any_json.choices[0].message.content), dict)
    choice = await client.chat.completions.create(
        model=ONNX,
        messages=[{"role": "user", "content": "Is Tokyo in Japan?"}],
        max_tokens=4,
        temperature=0,
        extra_body={"guided_choice": ["yes", "no"]},
    )
    assert choice.choices[0].message.content in ("yes", "no")


async def test_tools_through_the_sdk_call_stream_and_answer(facade_mesh):
    """OpenAI tool calling: a forced call's arguments validate, the streamed call arrives as tool_calls deltas, the
    tool's result goes back as a tool message."""
    import json

    import jsonschema

    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
        "additionalProperties": False,
    }
    tools = [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": parameters}}
    ]
    messages = [{"role": "user", "content": "What is the weather in Kyoto?"}]
    client = facade_mesh.client()
    reply = await client.chat.completions.create(
        model=ONNX, messages=messages, max_tokens=60, temperature=0, tools=tools, tool_choice="required"
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), parameters)
    stream = await client.chat.completions.create(
        model=TORCH,
        messages=messages,
        max_tokens=60,
        temperature=0,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    chunks = [c async for c in stream]
    pieces = [t for c in chunks if c.choices and c.choices[0].delta.tool_calls for t in c.choices[0].delta.tool_calls]
    assert pieces[0].id and pieces[0].function.name == "get_weather"
    jsonschema.validate(json.loads("".join(p.function.arguments or "" for p in pieces)), parameters)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    answer = await client.chat.completions.create(
        model=ONNX,
        messages=[
            *messages,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
        ],
        max_tokens=16,
        temperature=0,
        tools=tools,
        tool_choice="none",
    )
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls


async def test_neutral_values_of_unsupported_parameters_are_accepted(facade_mesh):
    reply = await facade_mesh.client().chat.completions.create(
        model=ONNX, messages=MESSAGES, max_tokens=2, n=1, logprobs=False, presence_penalty=0, frequency_penalty=0.0
    )
    assert reply.usage.completion_tokens == 2


async def test_malformed_bodies_and_unknown_routes_in_openai_shape(facade_mesh):
    async with httpx.AsyncClient(base_url=facade_mesh.url, headers={"authorization": "Bearer x"}) as http:
        for body, param in ((b"{not json", None), (b"[1, 2]", None), (b'{"model": "m"}', "messages")):
            answer = await http.post("/v1/chat/completions", content=body)
            assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
        answer = await http.post("/v1/embeddings", content=b"x" * (BODY_LIMIT + 1))
        assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"
        answer = await http.get("/v1/assistants")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_url"


async def test_auth_errors_from_the_gateway(facade_mesh):
    request = {"model": TORCH, "messages": MESSAGES, "max_tokens": 2}
    for key, reason in (("ais_12345678_" + "x" * 43, "api_key_invalid"), (None, "api_key_missing")):
        with pytest.raises(openai.AuthenticationError) as caught:
            await facade_mesh.client(key).chat.completions.create(**request)
        assert caught.value.code == reason  # a placeholder is no key: this gateway has user keys, so it says 401
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await facade_mesh.client("onnx-only").chat.completions.create(**request)
    assert denied.value.code == "model_not_allowed" and denied.value.body["type"] == "permission_error"
    with pytest.raises(openai.NotFoundError) as unknown:
        await facade_mesh.client().chat.completions.create(**{**request, "model": "gpt-17"})
    assert unknown.value.code == "model_not_found" and "gpt-17" in unknown.value.message


async def test_quota_is_429_with_retry_after(facade_mesh):
    client = facade_mesh.client("one-per-window")
    await client.completions.create(model=ONNX, prompt="Hello", max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.completions.create(model=ONNX, prompt="Hello", max_tokens=1)
    headers = caught.value.response.headers
    assert caught.value.code == "rate_limited" and 1 <= int(headers["retry-after"]) <= 2
    assert 0 < int(headers["retry-after-ms"]) <= 2000
    await asyncio.sleep(int(headers["retry-after-ms"]) / 1000 + 0.05)
    assert (await client.completions.create(model=ONNX, prompt="Hello", max_tokens=1)).choices[0].text is not None


async def test_503_and_unhealthy_when_the_gateway_is_down(facade_mesh):
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{facade_mesh.url}/health")).json() == {"status": "ok"}
    async with serving(build_app("127.0.0.1:9")) as down:
        async with httpx.AsyncClient() as http:
            health = await http.get(f"{down}/health")
            live = await http.get(f"{down}/health/live")
        assert health.status_code == 503 and health.json() == {"status": "unavailable"}
        assert live.status_code == 200  # alive (the supervisor does not restart it), not ready
        with pytest.raises(openai.InternalServerError) as caught:
            await facade_mesh.client(url=down).chat.completions.create(model=ONNX, messages=MESSAGES, max_tokens=2)
        assert caught.value.status_code == 503 and caught.value.code == "gateway_unavailable"
        assert caught.value.response.headers["retry-after"] == "1"


async def test_a_client_that_disconnects_stops_the_generation(facade_mesh, llm):
    backend = llm[0].model_host.models[TORCH].backend
    before = backend.tokens_generated
    stream = await facade_mesh.client().chat.completions.create(
        model=TORCH,
        messages=[{"role": "user", "content": "Write a very long story about a dragon."}],
        max_tokens=400,
        temperature=0.8,  # not cacheable: the model runs
        stream=True,
        extra_body={"min_tokens": 400},  # no early end: only the disconnect can stop it
    )
    received = 0
    async for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received >= 3:
            break
    assert backend.active_sequences == 1
    await stream.close()  # closes the connection mid-stream
    deadline = time.monotonic() + 3
    while backend.active_sequences and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert backend.active_sequences == 0, "the generation went on after the client disconnected"
    produced = backend.tokens_generated
    await asyncio.sleep(0.3)
    assert backend.tokens_generated == produced and produced - before < 100


async def test_a_model_federated_through_the_facade(
    facade_mesh, registry, store, tmp_path, monkeypatch, admin_metadata
):
    """A second mesh registers an `openai` model whose endpoint is this facade: its gateway answers with text
    that SmolLM2 produced behind the facade, and a facade in front of that open mesh takes the SDK's placeholder."""
    monkeypatch.setenv("OPENAI_API_KEY", facade_mesh.keys["user"])  # the remote's key: a key of the first mesh
    port, registry_port = free_port(), free_port()
    remote_llm = build_llm(
        ServerConfig(name="llm"), None, {}, store=store, registry_target=f"127.0.0.1:{registry_port}"
    )
    await remote_llm.start()
    gateway = build_gateway(
        ServerConfig(name="gateway", address=f"127.0.0.1:{port}"),
        mesh_for(llm=[f"127.0.0.1:{remote_llm.port}"]),
        registry_path=write_registry(tmp_path / "models.yaml", registry, [EMBEDDER]),
        store_root=store.root,
        registry_port=registry_port,
    )
    await gateway.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        params = struct_pb2.Struct()
        params.update({"api_key_env": "OPENAI_API_KEY"})
        model = rpb.Model(
            name="smol-via-facade",
            task=common_pb2.TASK_TEXT_GENERATION,
            provider="openai",
            endpoint=f"{facade_mesh.url}/v1",
            model_id=TORCH,
            max_output_tokens=64,
            params=params,
        )
        registry_stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
        await registry_stub.RegisterModel(rpb.RegisterModelRequest(model=model), metadata=admin_metadata)

        async def serving_remote() -> bool:
            return gateway.gateway.router.health_of("smol-via-facade") == "SERVING"

        await until(serving_remote, 20)
        direct = await llm_service_pb2_grpc.LlmServiceStub(facade_mesh.channel).Chat(
            pb.ChatRequest(model=TORCH, messages=GRPC_MESSAGES, max_output_tokens=8, temperature=0),
            metadata=[("authorization", f"Bearer {facade_mesh.keys['user']}")],
        )
        metrics = facade_mesh.gateway.metrics.registry
        calls = metrics.get_sample_value(
            "aisemble_key_requests_total", {"key_id": _key_id(facade_mesh), "role": "user"}
        )
        federated = await llm_service_pb2_grpc.LlmServiceStub(channel).Chat(
            pb.ChatRequest(model="smol-via-facade", messages=GRPC_MESSAGES, max_output_tokens=8, temperature=0)
        )
        assert federated.text == direct.text and "Paris" in federated.text
        assert federated.selection.model == "smol-via-facade"
        assert federated.usage.output_tokens == direct.usage.output_tokens
        after = metrics.get_sample_value(
            "aisemble_key_requests_total", {"key_id": _key_id(facade_mesh), "role": "user"}
        )
        assert after == calls + 1, "the federated call did not reach the first mesh through the facade"
        async with serving(build_app(f"127.0.0.1:{port}")) as open_facade:
            reply = await facade_mesh.client(None, url=open_facade).chat.completions.create(
                model="smol-via-facade", messages=MESSAGES, max_tokens=8, temperature=0
            )
        assert reply.choices[0].message.content == direct.text
    finally:
        await channel.close()
        await gateway.stop(grace_s=0.5)
        await remote_llm.stop(grace_s=0.5)


def _key_id(mesh) -> str:
    from aisemble.security.keys import key_id_of

    return key_id_of(mesh.keys["user"]) or ""
