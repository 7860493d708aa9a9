"""The ONNX Runtime backend of SmolLM2 matches the transformers backend token for token under greedy decoding."""

from __future__ import annotations

import pytest

from aisemble.hosting.backend import RequestContext
from aisemble.llm.v1 import llm_service_pb2 as pb
from services.llm.types import ChatTurn, GenerationRequest, SamplingParams

REQUESTS = [
    GenerationRequest(
        sampling=SamplingParams(max_output_tokens=48, temperature=0),
        messages=(ChatTurn("user", "Write a short poem about the sea."),),
    ),
    GenerationRequest(
        sampling=SamplingParams(max_output_tokens=48, temperature=0),
        messages=(ChatTurn("system", "You are terse."), ChatTurn("user", "List three colours.")),
    ),
    GenerationRequest(sampling=SamplingParams(max_output_tokens=48, temperature=0), prompt="def fibonacci(n):"),
]


@pytest.mark.parametrize("request_index", range(len(REQUESTS)))
def test_greedy_tokens_are_identical_to_transformers(llm, request_index):
    server, _stub, _ = llm
    request = REQUESTS[request_index]
    reference = server.model_host.models["smollm2-135m"].backend.run(request, RequestContext())
    onnx = server.model_host.models["smollm2-135m-onnx"].backend.run(request, RequestContext())
    assert len(reference.token_ids) >= 10
    assert onnx.token_ids == reference.token_ids
    assert onnx.text == reference.text


async def test_onnx_chat_through_grpc(llm):
    _server, stub, _ = llm
    messages = [pb.ChatMessage(role=pb.CHAT_ROLE_USER, content="What is the capital of France?")]
    replies = [
        r
        async for r in stub.StreamChat(
            pb.StreamChatRequest(model="smollm2-135m-onnx", messages=messages, max_output_tokens=24, temperature=0)
        )
    ]
    assert "Paris" in "".join(r.text for r in replies)
    assert replies[0].selection.model == "smollm2-135m-onnx"
    reference = await stub.Chat(
        pb.ChatRequest(model="smollm2-135m", messages=messages, max_output_tokens=24, temperature=0)
    )
    assert "".join(r.text for r in replies) == reference.text
