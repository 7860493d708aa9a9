"""`aisemble serve|up|health|status`: run one server or the whole mesh, check health, see what it serves."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from typing import Any

from entrypoints.commands.gateway import default_target, gateway_peer, print_rpc_error
from entrypoints.commands.output import print_table

__all__ = ["add_parsers", "add_status_parsers", "registered_models_file"]


def _serve(args: argparse.Namespace) -> int:
    from aisemble.config.mesh import load_mesh
    from aisemble.config.models import load_models
    from aisemble.config.security import address_is_loopback
    from aisemble.rpc.server import ServerConfig
    from aisemble.rpc.tls import gateway_server_credentials, service_server_credentials
    from entrypoints.launcher import SERVICE_APPS

    mesh = load_mesh()
    if args.service == "http":  # the OpenAI-compatible facade: HTTP (uvicorn), a translator over the gateways
        from facade.openai.server import run

        metrics = args.metrics_port if args.metrics_port is not None else -1
        return run(args.address or mesh.http_address, mesh, health_port=args.health_port, metrics_port=metrics)
    endpoint = {"gateway": mesh.gateway, "registry": mesh.registry}.get(args.service) or mesh.services.get(args.service)
    address = args.address or (endpoint.addresses[0] if endpoint else "127.0.0.1:0")
    metrics_port = args.metrics_port if args.metrics_port is not None else (endpoint.metrics_port if endpoint else -1)
    if args.service == "gateway":
        credentials = gateway_server_credentials(mesh.security)
    else:
        credentials = service_server_credentials(mesh.security, args.service)
        if credentials is None and not address_is_loopback(address):
            print(
                f"error: {args.service} would listen on {address} in plaintext: turn security.mtls on in mesh.yaml "
                "(`aisemble certs` makes the certificates) or bind 127.0.0.1",
                file=sys.stderr,
            )
            return 1
    config = ServerConfig(
        name=args.service,
        address=address,
        metrics_port=metrics_port,
        health_port=args.health_port,
        max_message_bytes=mesh.max_message_bytes,
        max_concurrent_rpcs=mesh.max_concurrent_rpcs,
        max_concurrent_streams=mesh.max_concurrent_streams,
        grace_s=mesh.grace_s,
        credentials=credentials,
    )
    module = importlib.import_module(SERVICE_APPS[args.service])
    models = load_models(registered_models_file())

    async def serve() -> None:
        # Built inside the running loop: grpc.aio channels (to upstreams, the gateway) bind to it.
        if args.service in ("gateway", "registry"):
            server = module.build_server(config, mesh)
        else:
            server = module.build_server(config, mesh, models)
        await server.serve_forever()

    asyncio.run(serve())
    return 0


def _up(args: argparse.Namespace) -> int:
    from aisemble.config.mesh import load_mesh
    from aisemble.config.models import load_models
    from entrypoints.launcher import run_mesh

    return run_mesh(load_mesh(), load_models(registered_models_file()), start_timeout_s=args.start_timeout)


def registered_models_file() -> Any:
    """The registry service's state when this machine has it (what the mesh serves), else the shipped seed."""
    from aisemble.config.schema import CONFIG_DIR
    from services.registry.store import default_registry_path

    state = default_registry_path()
    return state if state.is_file() else CONFIG_DIR / "models.yaml"


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from aisemble.config.mesh import load_mesh
    from aisemble.rpc.client import blocking_channel
    from entrypoints.launcher import peer_of

    mesh = load_mesh()
    address = args.address or mesh.gateway.addresses[0]
    member = next((name for name, e in mesh.services.items() if address in e.addresses), "gateway")
    with blocking_channel(address, peer=peer_of(mesh, member)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"{address} {args.service or '(overall)'}: {exc.code().name} {exc.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address} {args.service or '(overall)'}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _status(args: argparse.Namespace) -> int:
    import grpc

    from aisemble.registry.v1 import registry_service_pb2 as rpb
    from aisemble.registry.v1 import registry_service_pb2_grpc
    from aisemble.rpc.client import blocking_channel
    from aisemble.rpc.registry_messages import TASK_FROM_PROTO

    target = args.address or default_target()
    with blocking_channel(target, peer=gateway_peer()) as channel:
        stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
        try:
            models = stub.ListModels(rpb.ListModelsRequest(), timeout=args.timeout).models
        except grpc.RpcError as exc:
            return print_rpc_error(exc)
    print(f"gateway {target}: {len(models)} models")
    rows = []
    for model in models:
        stats = model.stats
        rows.append(
            (
                model.name,
                TASK_FROM_PROTO.get(model.task, "unknown"),
                model.provider,
                model.service,
                rpb.ModelHealth.Name(model.health).removeprefix("MODEL_HEALTH_"),
                stats.request_count,
                stats.error_count,
                f"{stats.latency_p50.ToNanoseconds() / 1e6:.1f}",
                f"{stats.latency_p95.ToNanoseconds() / 1e6:.1f}",
                f"{stats.tokens_per_second:.1f}",
                f"{stats.cost_total:.6f}",
            )
        )
    headers = ("model", "task", "provider", "service", "health", "requests", "errors", "p50 ms", "p95 ms", "tok/s")
    print_table((*headers, "cost"), rows, right={"requests", "errors", "p50 ms", "p95 ms", "tok/s", "cost"})
    _print_processes()
    return 0


def _print_processes() -> None:
    """The processes `aisemble up` supervises, from its state file (nothing when no launcher wrote one)."""
    from entrypoints.supervisor import read_processes

    processes = read_processes()
    if not processes:
        return
    print()
    rows = [
        (e["service"], e["address"], e.get("pid") or "-", e["state"], e["restarts"], e.get("last_exit") or "-")
        for e in processes
    ]
    print_table(("process", "address", "pid", "state", "restarts", "last exit"), rows, right={"pid", "restarts"})


def add_parsers(sub: Any) -> None:
    """`serve` and `up` (sub: the top-level add_subparsers())."""
    serve = sub.add_parser("serve", help="run one service (or the gateway) in the foreground")
    serve.add_argument(
        "service",
        choices=["registry", "llm", "nlp", "vision", "multimodal", "ensemble", "finetune", "gateway", "http"],
    )
    serve.add_argument("--address", help="host:port to listen on (default: from configs/mesh.yaml)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port (-1: none)")
    serve.add_argument(
        "--health-port",
        type=int,
        default=-1,
        help="also serve grpc.health.v1 in plaintext on this port, for probes that cannot speak mTLS "
        "(Kubernetes' gRPC probes); -1: none (default)",
    )

    up = sub.add_parser("up", help="start the whole mesh in the foreground; Ctrl-C stops it")
    up.add_argument("--start-timeout", type=float, default=600.0, help="seconds each service may take to load")
    serve.set_defaults(handler=_serve)
    up.set_defaults(handler=_up)


def add_status_parsers(sub: Any) -> None:
    """`status` and `health` (sub: the top-level add_subparsers())."""
    status = sub.add_parser("status", help="models, health and live figures, from the gateway")
    status.add_argument("--address", help="the gateway (default: from configs/mesh.yaml)")
    status.add_argument("--timeout", type=float, default=5.0)
    status.set_defaults(handler=_status)
    health = sub.add_parser("health", help="grpc.health.v1 check of a server or one model")
    health.add_argument("address", nargs="?", help="host:port (default: the gateway; a service's over mTLS)")
    health.add_argument("--service", default="", help="service or model name (default: overall)")
    health.add_argument("--timeout", type=float, default=5.0)
    health.set_defaults(handler=_health)
