"""Shared test fixtures: offline settings, the model store, and in-process servers on port 0."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from grpc import aio

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "OTEL_TRACES_EXPORTER": "none",
}.items():
    os.environ.setdefault(_key, _value)

from aisemble.store.model_store import ModelStore, default_store_root  # noqa: E402

# The session's own state directory (keys, certificates, fine-tuning jobs), so that tests never touch the
# user's .aisemble; the model store stays the prepared one.
os.environ.setdefault("AISEMBLE_MODEL_STORE", str(default_store_root()))
os.environ["AISEMBLE_STATE_DIR"] = _STATE_DIR = tempfile.mkdtemp(prefix="aisemble-test-state-")
atexit.register(shutil.rmtree, _STATE_DIR, ignore_errors=True)
from aisemble.config.models import load_models  # noqa: E402
from aisemble.rpc.client import Peer, open_channel  # noqa: E402
from aisemble.rpc.server import AisembleServer  # noqa: E402
from aisemble.security.bootstrap import ensure_local_key  # noqa: E402

ADMIN_KEY = ensure_local_key("admin")[0].read_text().strip()
ensure_local_key("mesh")

StartServer = Callable[[AisembleServer], Awaitable[aio.Channel]]


@pytest.fixture(scope="session")
def admin_metadata() -> list[tuple[str, str]]:
    """Call metadata carrying the session's admin key (admin RPCs through the gateway need it)."""
    return [("authorization", f"Bearer {ADMIN_KEY}")]


@pytest.fixture(scope="session")
def store() -> ModelStore:
    """The default model store (`make models` / `aisemble models prepare` builds it before the tests)."""
    return ModelStore(default_store_root())


@pytest.fixture(scope="session")
def registry():
    """The shipped configs/models.yaml."""
    return load_models()


async def _start(
    server: AisembleServer, started: list[tuple[AisembleServer, aio.Channel]], admin: bool = False
) -> aio.Channel:
    port = await server.start()
    channel = open_channel(f"127.0.0.1:{port}", peer=Peer(api_key=ADMIN_KEY if admin else None))
    await channel.channel_ready()
    started.append((server, channel))
    return channel


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start AisembleServers for one test and stop them afterwards; returns a channel to each (admin=True: one
    whose every call carries the session's admin key)."""
    started: list[tuple[AisembleServer, aio.Channel]] = []
    yield lambda server, admin=False: _start(server, started, admin)
    for server, channel in started:
        await channel.close()
        await server.stop(grace_s=0.5)


def status_details(error: grpc.aio.AioRpcError):
    """The google.rpc.Status carried by an error, unpacked into (ErrorInfo, BadRequest, RetryInfo)."""
    from google.rpc import error_details_pb2, status_pb2

    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, "the error carries no google.rpc.Status details"
    status = status_pb2.Status.FromString(raw)
    found = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return status, found
