"""`aisemble models list|show|register|deregister`: the registry's models through the gateway (ModelRegistryService)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from entrypoints.commands.gateway import add_gateway_arguments, call_gateway
from entrypoints.commands.output import clip, print_json, print_table

__all__ = ["add_parsers", "model_from_entry"]

#: Registry fields a flag of `models register` sets: (flag, field, type); list fields take the flag repeatedly.
_SCALAR_FLAGS = (
    ("--task", "task", str),
    ("--provider", "provider", str),
    ("--model-id", "model_id", str),
    ("--model-path", "model_path", str),
    ("--endpoint", "endpoint", str),
    ("--service", "service", str),
    ("--max-tokens", "max_tokens", int),
    ("--max-output-tokens", "max_output_tokens", int),
    ("--cost-per-token", "cost_per_token", float),
    ("--cost-per-input-token", "cost_per_input_token", float),
    ("--device", "device", str),
    ("--quantization", "quantization", str),
    ("--version", "version", str),
    ("--description", "description", str),
)
_LIST_FLAGS = (("--domain", "domains"), ("--language", "languages"), ("--tag", "tags"))


def _registry(args: argparse.Namespace, method: str, request: Any) -> Any:
    from aisemble.registry.v1 import registry_service_pb2_grpc

    return call_gateway(args, registry_service_pb2_grpc.ModelRegistryServiceStub, method, request)


def _task_name(value: int) -> str:
    from aisemble.rpc.registry_messages import TASK_FROM_PROTO

    return TASK_FROM_PROTO.get(value, "unknown")


def _health(value: int) -> str:
    from aisemble.registry.v1 import registry_service_pb2 as pb

    return pb.ModelHealth.Name(value).removeprefix("MODEL_HEALTH_")


def _list(args: argparse.Namespace) -> int:
    from aisemble.common.v1 import common_pb2
    from aisemble.registry.v1 import registry_service_pb2 as pb
    from aisemble.rpc.registry_messages import TASK_TO_PROTO

    request = pb.ListModelsRequest(
        task=TASK_TO_PROTO[args.task] if args.task else common_pb2.TASK_UNSPECIFIED,
        domain=args.domain or "",
        provider=args.provider or "",
        language=args.language or "",
        page_size=1000,
    )
    listed = pb.ListModelsResponse()
    while True:
        page = _registry(args, "ListModels", request)
        listed.models.extend(page.models)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    if args.json:
        print_json(listed)
        return 0
    rows = [
        (
            m.name,
            _task_name(m.task),
            m.provider,
            m.service,
            _health(m.health),
            ",".join(m.domains) or "-",
            ",".join(m.languages) or "any",
            m.version,
            clip(m.description, 60),
        )
        for m in listed.models
    ]
    print_table(
        ("model", "task", "provider", "service", "health", "domains", "languages", "version", "description"), rows
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from aisemble.registry.v1 import registry_service_pb2 as pb

    model = _registry(args, "GetModel", pb.GetModelRequest(name=args.name)).model
    if args.json:
        print_json(model)
        return 0
    document = json_format.MessageToDict(model, preserving_proto_field_name=True)
    document["task"] = _task_name(model.task)
    document["health"] = _health(model.health)
    rows = []
    for key, value in document.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, dict):
            value = json.dumps(value, ensure_ascii=False)
        rows.append((key, value))
    print_table(("field", "value"), rows)
    return 0


def model_from_entry(name: str, entry: dict[str, Any], where: str) -> Any:
    """A registry Model message from a models.yaml-style entry (task as text: `object-detection`). Only the shape
    is checked here; the registry validates the entry itself (INVALID_ARGUMENT names the field)."""
    from google.protobuf import json_format

    from aisemble.registry.v1 import registry_service_pb2 as pb
    from aisemble.rpc.registry_messages import TASK_TO_PROTO

    fields = dict(entry)
    task = fields.pop("task", None)
    fields.pop("preload", None)  # how a service loads the model: not a registry field of the contract
    model = pb.Model(name=name)
    if task is not None:
        if task not in TASK_TO_PROTO:
            raise SystemExit(f"error: {where}: task {task!r} is not one of {', '.join(TASK_TO_PROTO)}")
        model.task = TASK_TO_PROTO[task]
    try:
        json_format.ParseDict(fields, model)
    except json_format.ParseError as exc:
        raise SystemExit(f"error: {where}: {exc}") from None
    return model


def _entries(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], str]]:
    """(name, fields, where) of every model the file and the flags describe."""
    import yaml

    entries: list[tuple[str, dict[str, Any], str]] = []
    if args.file:
        try:
            document = yaml.safe_load(Path(args.file).expanduser().read_text(encoding="utf-8"))
        except OSError as exc:
            raise SystemExit(f"error: cannot read {args.file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SystemExit(f"error: {args.file} is not valid YAML: {exc}") from None
        if isinstance(document, dict) and isinstance(document.get("models"), dict):
            for name, fields in document["models"].items():
                if not isinstance(fields, dict):
                    raise SystemExit(f"error: {args.file}: model {name!r} must be a mapping of fields")
                entries.append((str(name), dict(fields), f"{args.file}: model {name!r}"))
        elif isinstance(document, dict):
            fields = dict(document)
            name = str(fields.pop("name", "") or args.name or "")
            entries.append((name, fields, f"{args.file}"))
        else:
            raise SystemExit(
                f"error: {args.file}: expected one entry (name: ..., task: ..., provider: ...) or `models: {{name: "
                "{task: ..., ...}}` as in configs/models.yaml"
            )
    else:
        entries.append((args.name or "", {}, "the flags"))
    overrides: dict[str, Any] = {}
    for _flag, field, _kind in _SCALAR_FLAGS:
        if getattr(args, field) is not None:
            overrides[field] = getattr(args, field)
    for _flag, field in _LIST_FLAGS:
        if getattr(args, field):
            overrides[field] = getattr(args, field)
    if args.param:
        overrides["params"] = dict(args.param)
    if args.name and len(entries) > 1:
        raise SystemExit(f"error: --name names one model, and {args.file} holds {len(entries)}")
    named = []
    for name, fields, where in entries:
        params = {**dict(fields.get("params") or {}), **overrides.get("params", {})}
        merged = {**fields, **overrides} | ({"params": params} if params else {})
        name = args.name or name
        if not name:
            raise SystemExit(f"error: {where}: the model needs a name (a `name:` field or --name)")
        named.append((name, merged, where))
    return named


def _register(args: argparse.Namespace) -> int:
    from aisemble.registry.v1 import registry_service_pb2 as pb

    if not args.file and not (args.name and args.task and args.provider):
        raise SystemExit("error: give a YAML file, or at least --name, --task and --provider")
    for name, fields, where in _entries(args):
        request = pb.RegisterModelRequest(
            model=model_from_entry(name, fields, where),
            validate_only=args.validate_only,
            replace_existing=args.replace,
        )
        model = _registry(args, "RegisterModel", request).model
        if args.json:
            print_json(model)
            continue
        verb = "valid (not registered)" if args.validate_only else "registered"
        print(f"{model.name}: {verb}, {_task_name(model.task)} on {model.provider}, service {model.service}")
    return 0


def _deregister(args: argparse.Namespace) -> int:
    from aisemble.registry.v1 import registry_service_pb2 as pb

    if not args.yes:
        if not sys.stdin.isatty():
            raise SystemExit(f"error: deregistering {args.name} needs --yes when stdin is not a terminal")
        answer = input(f"deregister {args.name}? its service unloads it [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed", file=sys.stderr)
            return 1
    model = _registry(args, "DeregisterModel", pb.DeregisterModelRequest(name=args.name)).model
    if args.json:
        print_json(model)
    else:
        print(f"{model.name}: deregistered")
    return 0


def _param(text: str) -> tuple[str, Any]:
    """KEY=VALUE, the value read as YAML (numbers, booleans, lists stay typed)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        return key, value


def add_parsers(actions: Any) -> None:
    """list, show, register and deregister under `aisemble models` (actions: its add_subparsers())."""
    from aisemble.config.models import TASKS

    listing = actions.add_parser("list", help="the registered models, with health (ModelRegistryService.ListModels)")
    listing.add_argument("--task", choices=TASKS, help="only models for this task")
    listing.add_argument("--domain", help="only models for this domain")
    listing.add_argument("--provider", help="only models of this provider")
    listing.add_argument("--language", help="only models that handle this language (ISO 639-1)")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="one registry entry, every field (GetModel)")
    show.add_argument("name")
    show.set_defaults(handler=_show)

    register = actions.add_parser(
        "register", help="register a model from a YAML file and/or flags (RegisterModel; an admin key)"
    )
    register.add_argument(
        "file",
        nargs="?",
        help="YAML: one entry (name, task, provider, ...) or `models: {name: {...}}` as configs/models.yaml",
    )
    register.add_argument("--name", help="the model's name (overrides the file's)")
    for flag, field, kind in _SCALAR_FLAGS:
        register.add_argument(flag, dest=field, type=kind, help=f"the entry's {field}")
    for flag, field in _LIST_FLAGS:
        register.add_argument(flag, dest=field, action="append", help=f"one of the entry's {field} (repeatable)")
    register.add_argument("--param", type=_param, action="append", metavar="KEY=VALUE", help="a backend param")
    register.add_argument("--replace", action="store_true", help="replace a model of the same name")
    register.add_argument("--validate-only", action="store_true", help="only check the entry; register nothing")
    register.set_defaults(handler=_register)

    deregister = actions.add_parser("deregister", help="remove a model from the registry (DeregisterModel)")
    deregister.add_argument("name")
    deregister.add_argument("--yes", action="store_true", help="do not ask")
    deregister.set_defaults(handler=_deregister)

    for parser in (listing, show, register, deregister):
        parser.add_argument("--json", action="store_true", help="print the response as JSON")
        add_gateway_arguments(parser, timeout=30.0)
