"""`aisemble complete` and `aisemble chat`: LlmService through the gateway, unary or streamed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from entrypoints.commands.gateway import add_gateway_arguments, gateway_channel, print_rpc_error

__all__ = ["add_parsers"]


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


def _complete(args: argparse.Namespace) -> int:
    return _generate(args, chat=False)


def _chat(args: argparse.Namespace) -> int:
    return _generate(args, chat=True)


def _generate(args: argparse.Namespace, chat: bool) -> int:
    import grpc

    from aisemble.llm.v1 import llm_service_pb2 as pb
    from aisemble.llm.v1 import llm_service_pb2_grpc

    fields = _generation_fields(args)
    if chat:
        messages = [pb.ChatMessage(role=pb.CHAT_ROLE_SYSTEM, content=args.system)] if args.system else []
        messages.append(pb.ChatMessage(role=pb.CHAT_ROLE_USER, content=args.prompt))
        fields["messages"] = messages
    else:
        fields["prompt"] = args.prompt
    with gateway_channel(args) as channel:
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
            return print_rpc_error(exc)
    if summary is not None:
        usage = summary.usage
        reason = pb.FinishReason.Name(summary.finish_reason).removeprefix("FINISH_REASON_").lower()
        print(
            f"[{args.model} -> {summary.selection.model or args.model}: {reason}, {usage.prompt_tokens} prompt + "
            f"{usage.output_tokens} output tokens, cost {usage.cost:.6f}]",
            file=sys.stderr,
        )
    return 0


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
    add_gateway_arguments(parser, timeout=120.0)


def add_parsers(sub: Any) -> None:
    """`complete` and `chat` (sub: the top-level add_subparsers())."""
    complete = sub.add_parser("complete", help="a text completion (LlmService.Complete / StreamComplete)")
    _add_generation_arguments(complete)
    complete.set_defaults(handler=_complete)
    chat = sub.add_parser("chat", help="one chat turn (LlmService.Chat / StreamChat)")
    _add_generation_arguments(chat)
    chat.add_argument("--system", help="a system message")
    chat.set_defaults(handler=_chat)
