"""NLP models that come and go at run time (as the registry follower adds, replaces and removes them)."""

from __future__ import annotations

import dataclasses

import grpc
import numpy as np
import pytest

from aisemble.nlp.v1 import nlp_service_pb2 as pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from services.nlp.app import build_server


async def test_a_model_added_replaced_and_removed_at_run_time(registry, store, start_server):
    server = build_server(ServerConfig(name="nlp-dynamic"), None, {"langid": registry["langid"]}, store=store)
    stub = nlp_service_pb2_grpc.NlpServiceStub(await start_server(server))
    runner = server.bindings[0].servicer.runner
    request = pb.EmbedRequest(model="late-minilm", texts=["eating food", "eating bread"])

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    spec = dataclasses.replace(registry["minilm-l6"], name="late-minilm")
    await server.model_host.add(spec)
    first = await stub.Embed(request)
    labels = pb.ClassifyRequest(
        model="late-minilm", texts=["The patient has a fever"], candidate_labels=["medical", "legal"]
    )
    assert (await stub.Classify(labels)).results[0].labels[0].label == "medical"
    batcher = runner.batcher("late-minilm")
    assert batcher.config.max_batch_size == 32

    # Replaced by the int8 weights with other batching: a new batcher, new label vectors, new answers.
    int8 = dataclasses.replace(
        registry["minilm-l6-int8"],
        name="late-minilm",
        params={**registry["minilm-l6-int8"].params, "max_batch_size": 8},
    )
    await server.model_host.add(int8)
    second = await stub.Embed(request)
    assert runner.batcher("late-minilm") is not batcher and runner.batcher("late-minilm").config.max_batch_size == 8
    a, b = (np.array(list(r.embeddings[0].values)) for r in (first, second))
    assert 0.97 < float(a @ b) < 0.99999  # the int8 model, close to but not the fp32 one
    assert (await stub.Classify(labels)).results[0].labels[0].label == "medical"

    await server.model_host.remove("late-minilm")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_model_registered_with_bad_params_is_refused_clearly(registry, store, start_server):
    server = build_server(ServerConfig(name="nlp-bad"), None, {}, store=store)
    stub = nlp_service_pb2_grpc.NlpServiceStub(await start_server(server))
    bad = dataclasses.replace(registry["minilm-l6"], name="bad-minilm", params={"max_batch_size": 0})
    await server.model_host.add(bad)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest(model="bad-minilm", texts=["hello"]))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "max_batch_size" in caught.value.details()
