"""`aisemble embed|classify|language`: NlpService's Embed (or StreamEmbed, for a JSONL file of any size), Classify
and DetectLanguage through the gateway."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from entrypoints.commands.gateway import add_gateway_arguments, call_gateway, gateway_channel, print_rpc_error
from entrypoints.commands.inputs import read_texts
from entrypoints.commands.output import clip, print_json, print_selection, print_table

__all__ = ["add_parsers"]

_TEXTS_HELP = "texts to send; `-` reads one per line from stdin"


def _nlp(args: argparse.Namespace, method: str, request: Any) -> Any:
    from aisemble.nlp.v1 import nlp_service_pb2_grpc

    return call_gateway(args, nlp_service_pb2_grpc.NlpServiceStub, method, request)


def _embed(args: argparse.Namespace) -> int:
    from aisemble.nlp.v1 import nlp_service_pb2 as pb

    if args.stream is not None:
        if args.texts:
            raise SystemExit("error: give texts as arguments or --stream FILE, not both")
        return _stream_embed(args)
    texts = read_texts(args.texts)
    request = pb.EmbedRequest(model=args.model, texts=texts)
    if args.no_normalize:
        request.normalize = False
    reply = _nlp(args, "Embed", request)
    if args.json:
        print_json(reply)
        return 0
    shown = min(args.show, reply.dimensions)
    rows = []
    for index, (text, embedding) in enumerate(zip(texts, reply.embeddings, strict=True)):
        values = list(embedding.values)
        head = " ".join(f"{v:+.3f}" for v in values[:shown]) + (" …" if len(values) > shown else "")
        norm = math.sqrt(sum(v * v for v in values))
        rows.append((index, embedding.token_count, f"{norm:.3f}", head, clip(text)))
    print_table(("#", "tokens", "norm", f"vector (first {shown} of {reply.dimensions})", "text"), rows, {"#", "tokens"})
    print_selection(args.model, reply.selection)
    return 0


def _classify(args: argparse.Namespace) -> int:
    from aisemble.nlp.v1 import nlp_service_pb2 as pb

    texts = read_texts(args.texts)
    request = pb.ClassifyRequest(
        model=args.model, texts=texts, candidate_labels=args.label or [], multi_label=args.multi_label
    )
    reply = _nlp(args, "Classify", request)
    if args.json:
        print_json(reply)
        return 0
    rows = []
    for index, (text, result) in enumerate(zip(texts, reply.results, strict=True)):
        for rank, label in enumerate(result.labels[: args.top]):
            rows.append(
                (index if rank == 0 else "", label.label, f"{label.score:.3f}", clip(text) if rank == 0 else "")
            )
    print_table(("#", "label", "score", "text"), rows, {"#", "score"})
    print_selection(args.model, reply.selection)
    return 0


def _language(args: argparse.Namespace) -> int:
    from aisemble.nlp.v1 import nlp_service_pb2 as pb

    texts = read_texts(args.texts)
    request = pb.DetectLanguageRequest(model=args.model, texts=texts)
    if args.top_k is not None:
        request.top_k = args.top_k
    reply = _nlp(args, "DetectLanguage", request)
    if args.json:
        print_json(reply)
        return 0
    rows = []
    for index, (text, result) in enumerate(zip(texts, reply.results, strict=True)):
        others = ", ".join(f"{a.language_code} {a.score:.3f}" for a in result.alternatives)
        rows.append((index, result.language_code, f"{result.score:.3f}", others or "-", clip(text)))
    print_table(("#", "language", "score", "alternatives", "text"), rows, {"#", "score"})
    print_selection(args.model, reply.selection)
    return 0


class _JsonLines:
    """(id, text) per line of a JSONL file: {"id": ..., "text": ...} (id optional: the line number) or a JSON
    string; blank lines are skipped. The first bad line ends the texts; `problem` then says which and why."""

    def __init__(self, source: TextIO, name: str) -> None:
        self.source, self.name = source, name
        self.problem = ""

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for number, line in enumerate(self.source, start=1):
            if not line.strip():
                continue
            try:
                document = json.loads(line)
            except json.JSONDecodeError as exc:
                self.problem = f"{self.name}:{number}: not JSON ({exc.msg})"
                return
            if isinstance(document, str):
                yield str(number), document
            elif isinstance(document, dict) and isinstance(document.get("text"), str):
                yield str(document.get("id", number)), document["text"]
            else:
                self.problem = f'{self.name}:{number}: each line is {{"id": ..., "text": "..."}} or a JSON string'
                return


def _stream_embed(args: argparse.Namespace) -> int:
    """StreamEmbed over a JSONL file (or stdin): one JSON line per text on stdout, in order, with a progress bar."""
    import grpc
    from tqdm import tqdm

    from aisemble.errors import Code
    from aisemble.nlp.v1 import nlp_service_pb2 as pb
    from aisemble.nlp.v1 import nlp_service_pb2_grpc

    if not 1 <= args.batch <= 256:
        raise SystemExit(f"error: --batch must be between 1 and 256 (got {args.batch})")
    if args.stream == "-":
        source, total = sys.stdin, None
    else:
        path = Path(args.stream).expanduser()
        try:
            source = path.open(encoding="utf-8")
        except OSError as exc:
            raise SystemExit(f"error: cannot read {args.stream}: {exc.strerror}") from None
        with path.open("rb") as counting:
            total = sum(1 for line in counting if line.strip())
    lines = _JsonLines(source, args.stream)

    def requests() -> Iterator[pb.StreamEmbedRequest]:
        first = pb.StreamEmbedRequest(model=args.model)
        if args.no_normalize:
            first.normalize = False
        if args.max_inflight is not None:
            first.max_inflight_texts = args.max_inflight
        yield first
        batch: list[pb.TextItem] = []
        for item_id, text in lines:
            batch.append(pb.TextItem(id=item_id, text=text))
            if len(batch) == args.batch:
                yield pb.StreamEmbedRequest(items=batch)
                batch = []
        if batch:
            yield pb.StreamEmbedRequest(items=batch)

    done = failed = 0
    selection = None
    with (
        source,
        gateway_channel(args) as channel,
        tqdm(total=total, unit="text", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True) as bar,
    ):
        stub = nlp_service_pb2_grpc.NlpServiceStub(channel)
        try:
            for reply in stub.StreamEmbed(requests(), timeout=args.timeout):
                selection = selection or (reply.selection if reply.HasField("selection") else None)
                for result in reply.results:
                    if result.HasField("embedding"):
                        line = {"id": result.id, "embedding": list(result.embedding.values)}
                        line.update(token_count=result.embedding.token_count, truncated=result.embedding.truncated)
                    else:
                        failed += 1
                        error = result.error
                        cause = {"code": Code.of(error.code).name, "reason": error.reason, "message": error.message}
                        line = {"id": result.id, "error": cause}
                    sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
                done += len(reply.results)
                bar.update(len(reply.results))
        except grpc.RpcError as exc:
            return print_rpc_error(exc)
    print(f"{done} texts embedded ({failed} failed)", file=sys.stderr)
    if selection is not None:
        print_selection(args.model, selection)
    if lines.problem:
        print(f"error: {lines.problem}; the stream ended there", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _common(parser: argparse.ArgumentParser, model_help: str, texts: str = "+") -> None:
    parser.add_argument("texts", nargs=texts, metavar="TEXT", help=_TEXTS_HELP)
    parser.add_argument("--model", default="auto", help=model_help)
    parser.add_argument("--json", action="store_true", help="print the response as one JSON object")
    add_gateway_arguments(parser, timeout=60.0)


def add_embed_parser(sub: Any) -> argparse.ArgumentParser:
    """`embed` (returned, so that more ways to send texts can be added to it)."""
    embed = sub.add_parser(
        "embed", help="sentence embeddings of texts (NlpService.Embed; --stream FILE.jsonl: StreamEmbed)"
    )
    _common(embed, "an EMBEDDING model, or auto (default)", texts="*")
    embed.add_argument(
        "--stream",
        metavar="FILE.jsonl",
        help='stream the texts of a JSONL file (`-`: stdin), one {"id": ..., "text": ...} or JSON string per line, '
        "through StreamEmbed; prints one JSON line per text, in order",
    )
    embed.add_argument("--batch", type=int, default=64, help="texts per stream message (default 64, at most 256)")
    embed.add_argument("--max-inflight", type=int, help="texts the server holds at once (the service's default: 512)")
    embed.add_argument("--no-progress", action="store_true", help="no progress bar on stderr (--stream)")
    embed.add_argument("--no-normalize", action="store_true", help="raw vectors instead of unit-length ones")
    embed.add_argument("--show", type=int, default=4, help="how many leading values the table shows (default 4)")
    embed.set_defaults(handler=_embed)
    return embed


def add_parsers(sub: Any) -> None:
    """`embed`, `classify` and `language` (sub: the top-level add_subparsers())."""
    add_embed_parser(sub)
    classify = sub.add_parser("classify", help="classify texts, or zero-shot over --label (NlpService.Classify)")
    _common(classify, "a TEXT_CLASSIFICATION model, an EMBEDDING model with --label, or auto (default)")
    classify.add_argument("--label", action="append", help="a candidate label for zero-shot (repeatable)")
    classify.add_argument("--multi-label", action="store_true", help="score each label on its own (zero-shot)")
    classify.add_argument("--top", type=int, default=3, help="labels shown per text (default 3)")
    classify.set_defaults(handler=_classify)
    language = sub.add_parser("language", help="the language of texts (NlpService.DetectLanguage)")
    _common(language, "a LANGUAGE_DETECTION model, or auto (default)")
    language.add_argument("--top-k", type=int, help="alternatives per text (the service's default: 3)")
    language.set_defaults(handler=_language)
