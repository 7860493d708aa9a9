"""One resolution path: a model of the wrong task gets the same status, reason and message from the gateway
(which checks before forwarding) and from the service that hosts it (which checks again)."""

from __future__ import annotations

import grpc
import pytest

from aisemble.nlp.v1 import nlp_service_pb2 as pb
from aisemble.nlp.v1 import nlp_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from tests.conftest import status_details
from tests.integration.conftest import build_gateway, mesh_for, write_registry


@pytest.fixture
async def gateway_over_nlp(nlp, registry, store, tmp_path, start_server):
    server = nlp[0]
    path = write_registry(tmp_path / "models.yaml", registry, ("minilm-l6", "langid"))
    mesh = mesh_for(nlp=[f"127.0.0.1:{server.port}"])
    gateway = build_gateway(ServerConfig(name="gateway"), mesh, registry_path=path, store_root=store.root)
    return nlp_service_pb2_grpc.NlpServiceStub(await start_server(gateway))


async def _error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


@pytest.mark.parametrize(
    ("rpc", "request_"),
    [
        ("Embed", pb.EmbedRequest(model="langid", texts=["a"])),
        ("DetectLanguage", pb.DetectLanguageRequest(model="minilm-l6", texts=["a"])),
        ("Classify", pb.ClassifyRequest(model="langid", texts=["a"], candidate_labels=["x", "y"])),
    ],
)
async def test_a_wrong_task_is_the_same_error_from_the_gateway_and_the_service(gateway_over_nlp, nlp, rpc, request_):
    through_gateway = await _error(getattr(gateway_over_nlp, rpc)(request_))
    direct = await _error(getattr(nlp[1], rpc)(request_))
    for error in (through_gateway, direct):
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert status_details(error)[1]["ErrorInfo"].reason == "MODEL_WRONG_TASK"
    assert through_gateway.details().startswith(direct.details().split(" (")[0])
