"""The `aisemble` command: prepare models, run one service or the whole mesh, and call the services."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aisemble.environment import apply_offline_defaults

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Command] = {}


def _command(name: str) -> Callable[[Command], Command]:
    def register(func: Command) -> Command:
        _COMMANDS[name] = func
        return func

    return register


@_command("models.prepare")
def _models_prepare(args: argparse.Namespace) -> int:
    from aisemble.store.builder import StoreBuilder
    from aisemble.store.model_store import default_store_root
    from aisemble.store.recipes import RECIPES

    store = StoreBuilder(args.store or default_store_root(), RECIPES)
    results = store.prepare(args.artifacts or None, force=args.force, progress=not args.quiet)
    width = max((len(r.artifact) for r in results), default=8)
    failed = 0
    for result in results:
        print(f"{result.artifact:<{width}}  {result.action:<10}  {result.seconds:6.1f} s  {result.detail}")
        failed += result.action == "failed"
    print(f"model store: {store.root}")
    return 1 if failed else 0


@_command("models.status")
def _models_status(args: argparse.Namespace) -> int:
    from aisemble.store.builder import StoreBuilder
    from aisemble.store.model_store import default_store_root
    from aisemble.store.recipes import RECIPES

    store = StoreBuilder(args.store or default_store_root(), RECIPES)
    rows = store.status(deep=args.deep)
    width = max((len(r.artifact) for r in rows), default=8)
    for row in rows:
        print(f"{row.artifact:<{width}}  {row.state:<10}  {row.detail}")
    print(f"model store: {store.root}")
    return 0 if all(r.state == "ok" for r in rows) else 1


@_command("models.import")
def _models_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from aisemble.store.builder import StoreBuilder
    from aisemble.store.model_store import default_store_root
    from aisemble.store.recipes import RECIPES

    store = StoreBuilder(args.store or default_store_root(), RECIPES)
    try:
        manifest = store.import_files(args.name, Path(args.source), replace=args.replace, progress=not args.quiet)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{manifest.artifact}: {len(manifest.files)} files, {manifest.size_bytes} bytes, checksums recorded")
    print(f"model store: {store.root} (register it with model_path: {manifest.artifact})")
    return 0


@_command("serve")
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
    models = load_models(_registered_models_file())

    async def serve() -> None:
        # Built inside the running loop: grpc.aio channels (to upstreams, the gateway) bind to it.
        if args.service in ("gateway", "registry"):
            server = module.build_server(config, mesh)
        else:
            server = module.build_server(config, mesh, models)
        await server.serve_forever()

    asyncio.run(serve())
    return 0


@_command("up")
def _up(args: argparse.Namespace) -> int:
    from aisemble.config.mesh import load_mesh
    from aisemble.config.models import load_models
    from entrypoints.launcher import run_mesh

    return run_mesh(load_mesh(), load_models(_registered_models_file()), start_timeout_s=args.start_timeout)


def _registered_models_file() -> Any:
    """The registry service's state when this machine has it (what the mesh serves), else the shipped seed."""
    from aisemble.config.schema import CONFIG_DIR
    from services.registry.store import default_registry_path

    state = default_registry_path()
    return state if state.is_file() else CONFIG_DIR / "models.yaml"


@_command("health")
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


def _default_target() -> str:
    from aisemble.config.mesh import load_mesh

    return load_mesh().gateway.addresses[0]


def _gateway_peer() -> Any:
    """How the CLI reaches the gateway: its TLS when configured, and the API key ($AISEMBLE_API_KEY, else
    $AISEMBLE_API_KEY_FILE, else the local admin key in <state>/credentials/admin.key)."""
    from aisemble.config.mesh import load_mesh
    from aisemble.rpc.client import api_key
    from aisemble.rpc.tls import gateway_peer

    return gateway_peer(load_mesh().security, "cli", api_key("admin.key"))


def _generation_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"model": args.model, "stop": args.stop or []}
    for name, value in (
        ("max_output_tokens", args.max_tokens),
        ("temperature", args.temperature),
        ("top_p", args.top_p),
        ("seed", args.seed),
    ):
        if value is not None:
            fields[name] = value
    fmt = _response_format(args)
    if fmt is not None:
        fields["response_format"] = fmt
    return fields


def _response_format(args: argparse.Namespace) -> Any:
    """The ResponseFormat the flags ask for: --json-schema (a file, or the JSON itself), --json-object, --regex or
    --choice (repeatable); None without one."""
    from aisemble.llm.v1 import llm_service_pb2 as pb

    if args.json_schema is not None:
        source = args.json_schema
        try:
            text = source if source.lstrip().startswith("{") else Path(source).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise SystemExit(f"error: --json-schema: {exc}") from None
        return pb.ResponseFormat(json_schema=text)
    if args.json_object:
        return pb.ResponseFormat(json_object=pb.AnyJson())
    if args.regex is not None:
        return pb.ResponseFormat(regex=args.regex)
    if args.choice:
        return pb.ResponseFormat(choice=pb.Choices(choices=args.choice))
    return None


def _print_rpc_error(exc: Exception) -> int:
    import grpc

    if not isinstance(exc, grpc.RpcError):
        raise exc
    print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
    return 1


@_command("complete")
def _complete(args: argparse.Namespace) -> int:
    return _generate(args, chat=False)


@_command("chat")
def _chat(args: argparse.Namespace) -> int:
    return _generate(args, chat=True)


def _generate(args: argparse.Namespace, chat: bool) -> int:
    import grpc

    from aisemble.llm.v1 import llm_service_pb2 as pb
    from aisemble.llm.v1 import llm_service_pb2_grpc
    from aisemble.rpc.client import blocking_channel

    fields = _generation_fields(args)
    if chat:
        messages = [pb.ChatMessage(role=pb.CHAT_ROLE_SYSTEM, content=args.system)] if args.system else []
        messages.append(pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=args.prompt))
        fields["messages"] = messages
    else:
        fields["prompt"] = args.prompt
    with blocking_channel(args.address or _default_target(), peer=_gateway_peer()) as channel:
        stub = llm_service_pb2_grpc.LlmServiceStub(channel)
        try:
            if args.stream:
                request = (pb.StreamChatRequest if chat else pb.StreamCompleteRequest)(**fields)
                method = stub.StreamChat if chat else stub.StreamComplete
                last = None
                for reply in method(request, timeout=args.timeout):
                    sys.stdout.write(reply.text)
                    sys.stdout.flush()
                    last = reply
                sys.stdout.write("\n")
                summary = last
            else:
                request = (pb.ChatRequest if chat else pb.CompleteRequest)(**fields)
                summary = (stub.Chat if chat else stub.Complete)(request, timeout=args.timeout)
                print(summary.text)
        except grpc.RpcError as exc:
            return _print_rpc_error(exc)
    if summary is not None:
        usage = summary.usage
        reason = pb.FinishReason.Name(summary.finish_reason).removeprefix("FINISH_REASON_").lower()
        print(
            f"[{args.model} -> {summary.selection.model or args.model}: {reason}, {usage.prompt_tokens} prompt + "
            f"{usage.output_tokens} output tokens, cost {usage.cost:.6f}]",
            file=sys.stderr,
        )
    return 0


@_command("status")
def _status(args: argparse.Namespace) -> int:
    import grpc

    from aisemble.registry.v1 import registry_service_pb2 as rpb
    from aisemble.registry.v1 import registry_service_pb2_grpc
    from aisemble.rpc.client import blocking_channel
    from aisemble.rpc.registry_messages import TASK_FROM_PROTO

    target = args.address or _default_target()
    with blocking_channel(target, peer=_gateway_peer()) as channel:
        stub = registry_service_pb2_grpc.ModelRegistryServiceStub(channel)
        try:
            models = stub.ListModels(rpb.ListModelsRequest(), timeout=args.timeout).models
        except grpc.RpcError as exc:
            return _print_rpc_error(exc)
    print(f"gateway {target}: {len(models)} models")
    header = f"{'model':<22} {'task':<21} {'provider':<12} {'service':<8} {'health':<12} {'requests':>8} {'errors':>6}"
    print(header + f" {'p50 ms':>7} {'p95 ms':>7} {'tok/s':>6} {'cost':>9}")
    for model in models:
        stats = model.stats
        health = rpb.ModelHealth.Name(model.health).removeprefix("MODEL_HEALTH_")
        task = TASK_FROM_PROTO.get(model.task, "unknown")
        p50 = stats.latency_p50.ToNanoseconds() / 1e6
        p95 = stats.latency_p95.ToNanoseconds() / 1e6
        print(
            f"{model.name:<22} {task:<21} {model.provider:<12} {model.service:<8} {health:<12} "
            f"{stats.request_count:>8} {stats.error_count:>6} {p50:>7.1f} {p95:>7.1f} "
            f"{stats.tokens_per_second:>6.1f} {stats.cost_total:>9.6f}"
        )
    _print_processes()
    return 0


def _print_processes() -> None:
    """The processes `aisemble up` supervises, from its state file (nothing when no launcher wrote one)."""
    from entrypoints.supervisor import read_processes

    processes = read_processes()
    if not processes:
        return
    print(f"\n{'process':<11} {'address':<22} {'pid':>7} {'state':<11} {'restarts':>8}  last exit")
    for entry in processes:
        print(
            f"{entry['service']!s:<11} {entry['address']!s:<22} {entry.get('pid') or '-'!s:>7} "
            f"{entry['state']!s:<11} {entry['restarts']!s:>8}  {entry.get('last_exit') or '-'}"
        )


@_command("keys.create")
@_command("keys.list")
@_command("keys.revoke")
def _keys(args: argparse.Namespace) -> int:
    from entrypoints.security_cli import run_keys

    return run_keys(args)


@_command("certs")
def _certs(args: argparse.Namespace) -> int:
    from entrypoints.security_cli import run_certs

    return run_certs(args)


@_command("finetune.create")
@_command("finetune.upload")
@_command("finetune.watch")
@_command("finetune.get")
@_command("finetune.list")
@_command("finetune.cancel")
def _finetune(args: argparse.Namespace) -> int:
    from services.finetune.client import run

    return run(args, args.address or _default_target(), peer=_gateway_peer())


def _add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt (complete) or the user message (chat)")
    parser.add_argument("--model", default="auto", help="a registry model name, or auto (default)")
    parser.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    parser.add_argument("--max-tokens", type=int, help="max_output_tokens")
    parser.add_argument("--temperature", type=float, help="0 for greedy")
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--stop", action="append", help="a stop sequence (repeatable)")
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json-schema", metavar="FILE|JSON", help="the answer follows this JSON Schema (enforced)")
    formats.add_argument("--json-object", action="store_true", help="the answer is a JSON object (enforced)")
    formats.add_argument("--regex", help="the whole answer matches this regular expression (enforced)")
    formats.add_argument("--choice", action="append", help="the answer is one of these (repeatable; enforced)")
    parser.add_argument("--address", help="host:port (default: the gateway from configs/mesh.yaml)")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aisemble", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="the local model store").add_subparsers(dest="action", required=True)
    prepare = models.add_parser("prepare", help="build the model store from the installed model packages")
    prepare.add_argument("artifacts", nargs="*", help="artifacts to build (default: all)")
    prepare.add_argument("--force", action="store_true", help="rebuild even when up to date")
    prepare.add_argument("--store", help="model store folder (default: $AISEMBLE_MODEL_STORE or .aisemble/models)")
    prepare.add_argument("--quiet", action="store_true", help="no progress bars")
    imported = models.add_parser(
        "import", help="copy your own model files (e.g. YOLO .pt weights) into the store, with checksums"
    )
    imported.add_argument("source", help="a folder or one file")
    imported.add_argument("--name", required=True, help="the artifact name (a registry entry's model_path)")
    imported.add_argument("--replace", action="store_true", help="replace an artifact of that name")
    imported.add_argument("--store", help="model store folder")
    imported.add_argument("--quiet", action="store_true", help="no progress bars")
    store_status = models.add_parser("status", help="what the model store holds and whether it verifies")
    store_status.add_argument("--store", help="model store folder")
    store_status.add_argument("--deep", action="store_true", help="check sha256 of every file (slower)")

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

    complete = sub.add_parser("complete", help="a text completion (LlmService.Complete / StreamComplete)")
    _add_generation_arguments(complete)
    chat = sub.add_parser("chat", help="one chat turn (LlmService.Chat / StreamChat)")
    _add_generation_arguments(chat)
    chat.add_argument("--system", help="a system message")

    status = sub.add_parser("status", help="models, health and live figures, from the gateway")
    status.add_argument("--address", help="the gateway (default: from configs/mesh.yaml)")
    status.add_argument("--timeout", type=float, default=5.0)

    from services.finetune.client import add_parsers as add_finetune_parsers

    finetune = sub.add_parser("finetune", help="fine-tuning jobs: create (--watch: live progress), upload, list...")
    add_finetune_parsers(finetune.add_subparsers(dest="action", required=True))

    from entrypoints.security_cli import add_parsers as add_security_parsers

    add_security_parsers(sub)

    health = sub.add_parser("health", help="grpc.health.v1 check of a server or one model")
    health.add_argument("address", nargs="?", help="host:port (default: the gateway; a service's over mTLS)")
    health.add_argument("--service", default="", help="service or model name (default: overall)")
    health.add_argument("--timeout", type=float, default=5.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `aisemble` console script."""
    apply_offline_defaults()
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    key = f"{args.command}.{args.action}" if getattr(args, "action", None) else args.command
    try:
        return _COMMANDS[key](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from aisemble.errors import AisembleError

        if args.verbose or not isinstance(exc, AisembleError | OSError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
