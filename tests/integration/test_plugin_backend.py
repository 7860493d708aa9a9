"""A third-party backend package, installed from tests/plugins, is discovered by entry point and serves a request."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from aisemble.config.models import load_models
from aisemble.config.schema import ConfigError
from aisemble.hosting.backend import resolve_backend_class
from aisemble.hosting.catalogue import ENTRY_POINT_GROUP, known_providers
from aisemble.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from services.llm.app import build_server

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "aisemble-reverse-backend"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """pip-install the plugin into a private folder and put it on sys.path for this module."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        check=True,
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("aisemble_reverse_backend", None)
    importlib.invalidate_caches()


def test_unknown_provider_is_refused_before_the_plugin_is_installed(tmp_path):
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  reverser:\n    task: text-generation\n    provider: reverse\n")
    with pytest.raises(ConfigError, match="unknown provider 'reverse'"):
        load_models(config)


async def test_entry_point_backend_is_discovered_and_serves(installed_plugin, tmp_path, start_server):
    assert "reverse" in known_providers(), f"no '{ENTRY_POINT_GROUP}' entry point named 'reverse' was found"
    assert resolve_backend_class("text-generation", "reverse").__module__ == "aisemble_reverse_backend"

    config = tmp_path / "models.yaml"
    config.write_text("models:\n  reverser:\n    task: text-generation\n    provider: reverse\n")
    models = load_models(config)
    channel = await start_server(build_server(ServerConfig(name="llm"), None, models))
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)

    replies = [
        r
        async for r in stub.StreamComplete(
            llm_service_pb2.StreamCompleteRequest(model="reverser", prompt="one two three")
        )
    ]
    assert "".join(r.text for r in replies) == "three two one"
    assert replies[0].selection.model == "reverser"
    assert replies[-1].finish_reason == llm_service_pb2.FINISH_REASON_STOP
    assert replies[-1].usage.output_tokens == 3
