"""Keepalive that both ends agree on: a long-lived idle stream outlives many client pings without a GOAWAY,
and (the control) a server with gRPC's default ping policy does tear the same connection down."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aisemble.rpc import client
from aisemble.rpc import server as server_module
from aisemble.rpc.client import open_channel
from aisemble.rpc.server import AisembleServer, ServerConfig

PING_MS = 300  # the shared interval, shortened so that a test sees a dozen pings in a few seconds


async def _hold_idle_stream(extra_options=()) -> tuple[bool, set[grpc.ChannelConnectivity]]:
    """Serve health only; hold a Watch stream idle for ~12 pings; (the stream still alive, the states seen)."""
    server = AisembleServer(ServerConfig(name="keepalive", extra_options=tuple(extra_options)), [])
    port = await server.start()
    states: set[grpc.ChannelConnectivity] = set()
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            for _ in range(40):  # 4 s: about 13 ping intervals
                states.add(channel.get_state())
                await asyncio.sleep(0.1)
            alive = not watch.done()
            watch.cancel()
            return alive, states
    finally:
        await server.stop(grace_s=0.1)


@pytest.fixture
def short_pings(monkeypatch):
    monkeypatch.setattr(client, "KEEPALIVE_TIME_MS", PING_MS)
    monkeypatch.setattr(client, "KEEPALIVE_TIMEOUT_MS", 2_000)


async def test_an_idle_stream_outlives_the_pings(short_pings):
    alive, states = await _hold_idle_stream()
    assert alive and states == {grpc.ChannelConnectivity.READY}


async def test_the_control_a_server_with_the_default_ping_policy_hangs_up(short_pings, monkeypatch):
    # gRPC's default: pings at most every 5 minutes without data; more are "too_many_pings" -> GOAWAY.
    monkeypatch.setattr(server_module, "server_keepalive_options", lambda: [])
    alive, states = await _hold_idle_stream()
    assert not alive or states != {grpc.ChannelConnectivity.READY}
