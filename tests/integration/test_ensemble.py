"""The ensemble service calling real LLM members through a real gateway."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2

from aisemble.ensemble.v1 import ensemble_service_pb2 as pb
from aisemble.ensemble.v1 import ensemble_service_pb2_grpc
from aisemble.llm.v1 import llm_service_pb2
from aisemble.rpc.server import ServerConfig
from services.ensemble.app import build_server as build_ensemble
from tests.integration.conftest import LLM_MODELS, build_gateway, mesh_for, write_registry


@pytest.fixture
async def ensemble(llm, registry, store, tmp_path, start_server):
    path = write_registry(tmp_path / "models.yaml", registry, LLM_MODELS)
    gateway_server = build_gateway(
        ServerConfig(name="gateway"),
        mesh_for(llm=[f"127.0.0.1:{llm[0].port}"]),
        registry_path=path,
        store_root=store.root,
    )
    await start_server(gateway_server)
    for _ in range(100):
        if all(gateway_server.gateway.router.health_of(m) == "SERVING" for m in LLM_MODELS):
            break
        await asyncio.sleep(0.05)
    server = build_ensemble(
        ServerConfig(name="ensemble"), mesh_for(), gateway_target=f"127.0.0.1:{gateway_server.port}"
    )
    channel = await start_server(server)
    return ensemble_service_pb2_grpc.EnsembleServiceStub(channel)


def _completion(**fields):
    return llm_service_pb2.CompleteRequest(
        prompt="The capital of France is", max_output_tokens=6, temperature=0, **fields
    )


async def test_highest_confidence_over_two_real_models(ensemble):
    reply = await ensemble.Run(
        pb.RunRequest(members=[pb.Member(model=m) for m in LLM_MODELS], completion=_completion())
    )
    assert reply.strategy == pb.STRATEGY_HIGHEST_CONFIDENCE
    assert [r.model for r in reply.member_results] == list(LLM_MODELS)
    assert all(r.HasField("completion") and r.confidence < 0 for r in reply.member_results)
    assert reply.completion.selection.model in LLM_MODELS and "Paris" in reply.completion.text
    assert reply.completion.usage.output_tokens == sum(r.completion.usage.output_tokens for r in reply.member_results)


async def test_a_failing_member_is_reported_not_fatal(ensemble):
    reply = await ensemble.Run(
        pb.RunRequest(
            members=[
                pb.Member(model="smollm2-135m-onnx"),
                pb.Member(model="no-such-model"),
                pb.Member(model="smollm2-135m", timeout=duration_pb2.Duration(nanos=1_000_000)),
            ],
            strategy=pb.STRATEGY_WEIGHTED_VOTE,
            completion=_completion(),
        )
    )
    outcomes = {r.model: r for r in reply.member_results}
    assert outcomes["smollm2-135m-onnx"].HasField("completion")
    assert outcomes["no-such-model"].failure.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert outcomes["no-such-model"].failure.reason == "MODEL_NOT_FOUND"
    assert outcomes["smollm2-135m"].failure.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert reply.completion.text.strip()


async def test_too_few_successes_is_unavailable(ensemble):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ensemble.Run(
            pb.RunRequest(
                members=[pb.Member(model="smollm2-135m-onnx"), pb.Member(model="nope")],
                min_successful=2,
                completion=_completion(),
            )
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and "nope: NOT_FOUND" in caught.value.details()


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"completion": _completion()}, "members"),
        ({"members": [pb.Member(model="auto")], "completion": _completion()}, "members[0].model"),
        ({"members": [pb.Member(model="a"), pb.Member(model="a")], "completion": _completion()}, "members[1].model"),
        ({"members": [pb.Member(model="a")]}, "input"),
        ({"members": [pb.Member(model="a")], "completion": _completion(model="x")}, "completion.model"),
        (
            {
                "members": [pb.Member(model="a")],
                "strategy": pb.STRATEGY_PROBABILITY_AVERAGE,
                "completion": _completion(),
            },
            "strategy",
        ),
        ({"members": [pb.Member(model="a", weight=-1)], "completion": _completion()}, "members[0].weight"),
        ({"members": [pb.Member(model="a")], "min_successful": 3, "completion": _completion()}, "min_successful"),
    ],
)
async def test_bad_ensembles_are_invalid_argument(ensemble, request_fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ensemble.Run(pb.RunRequest(**request_fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()


async def test_a_strategy_outside_the_contract_is_invalid_argument(ensemble):
    """Any int32 arrives in an open enum: the server's request check refuses it with the field's path."""
    from tests.conftest import status_details

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ensemble.Run(pb.RunRequest(members=[pb.Member(model="a")], strategy=11, completion=_completion()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _status, details = status_details(caught.value)
    assert details["ErrorInfo"].reason == "UNKNOWN_ENUM_VALUE"
    assert [v.field for v in details["BadRequest"].field_violations] == ["strategy"]


@pytest.mark.parametrize("strategy", [11, -1, 2**31 - 1])
async def test_the_servicer_itself_refuses_an_unknown_strategy(strategy):
    """Even without the server's check in front of it, an unknown Strategy is INVALID_ARGUMENT, never a crash."""
    from aisemble.errors import InvalidArgumentError
    from services.ensemble.servicer import EnsembleServicer

    request = pb.RunRequest(members=[pb.Member(model="a")], strategy=strategy, completion=_completion())
    with pytest.raises(InvalidArgumentError) as caught:
        await EnsembleServicer(runner=None).Run(request, context=None)  # type: ignore[arg-type]
    assert [v.field for v in caught.value.field_violations] == ["strategy"]


async def test_every_member_answers_in_the_requested_format(ensemble):
    """The members get the request's response_format (through the gateway): each answer, and so the chosen one,
    follows the schema."""
    import json

    import jsonschema

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "country": {"enum": ["France", "Italy"]}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    completion = llm_service_pb2.CompleteRequest(
        prompt="The capital of France as JSON:",
        max_output_tokens=40,
        temperature=0,
        response_format=llm_service_pb2.ResponseFormat(json_schema=json.dumps(schema)),
    )
    reply = await ensemble.Run(pb.RunRequest(members=[pb.Member(model=m) for m in LLM_MODELS], completion=completion))
    for result in reply.member_results:
        assert result.completion.finish_reason == llm_service_pb2.FINISH_REASON_STOP
        jsonschema.validate(json.loads(result.completion.text), schema)
    jsonschema.validate(json.loads(reply.completion.text), schema)


async def test_stream_run_delivers_the_fast_member_before_the_slow_one_finishes(ensemble):
    """A member that answers at once (the gateway has the ONNX model's greedy answer cached from a first run)
    arrives while the transformers member is still decoding 32 tokens, then the slow one, then the combined
    answer. (Two members decoding at once on two cores finish in either order, so the fast one is made fast.)"""
    import time

    completion = llm_service_pb2.CompleteRequest(
        prompt="Once upon a time, in a land far away,", max_output_tokens=32, temperature=0
    )
    first = await ensemble.Run(pb.RunRequest(members=[pb.Member(model="smollm2-135m-onnx")], completion=completion))
    request = pb.StreamRunRequest(
        run=pb.RunRequest(members=[pb.Member(model=m) for m in LLM_MODELS], completion=completion)
    )
    started = time.perf_counter()
    arrivals = []
    async for message in ensemble.StreamRun(request):
        arrivals.append((time.perf_counter() - started, message))
    kinds = [message.WhichOneof("event") for _, message in arrivals]
    assert kinds == ["member_result", "member_result", "combined"]
    (fast_at, fast), (_slow_at, slow) = arrivals[0], arrivals[1]
    assert fast.member_result.model == "smollm2-135m-onnx" and slow.member_result.model == "smollm2-135m"
    assert fast.member_result.completion.text == first.member_results[0].completion.text
    assert slow.member_result.completion.usage.output_tokens > 0
    slow_latency = slow.member_result.latency.ToNanoseconds() / 1e9
    assert fast_at < slow_latency, f"the fast member arrived at {fast_at:.2f} s, the slow one took {slow_latency:.2f} s"
    combined = arrivals[2][1].combined
    assert [r.model for r in combined.member_results] == list(LLM_MODELS)  # the request's order, as in Run
    assert combined.completion.selection.model in LLM_MODELS and combined.completion.text
    assert combined.member_results[0].completion.text == slow.member_result.completion.text


async def test_stream_run_with_too_few_successes_ends_with_unavailable_after_the_members(ensemble):
    request = pb.StreamRunRequest(
        run=pb.RunRequest(
            members=[
                pb.Member(model="nope"),
                pb.Member(model="smollm2-135m", timeout=duration_pb2.Duration(nanos=1_000_000)),
            ],
            completion=_completion(),
        )
    )
    seen = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in ensemble.StreamRun(request):
            seen.append(message.member_result)
    assert sorted(m.model for m in seen) == ["nope", "smollm2-135m"]
    assert all(m.HasField("failure") for m in seen)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and "0 of 2 members" in caught.value.details()


async def test_a_bad_stream_run_names_the_field_under_run(ensemble):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in ensemble.StreamRun(pb.StreamRunRequest(run=pb.RunRequest(members=[pb.Member(model="a")]))):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "run.input" in caught.value.details()
