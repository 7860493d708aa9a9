"""`aisemble embed|classify|language`: NlpService's Embed, Classify and DetectLanguage through the gateway."""

from __future__ import annotations

import argparse
import math
from typing import Any

from entrypoints.commands.gateway import add_gateway_arguments, call_gateway
from entrypoints.commands.inputs import read_texts
from entrypoints.commands.output import clip, print_json, print_selection, print_table

__all__ = ["add_parsers"]

_TEXTS_HELP = "texts to send; `-` reads one per line from stdin"


def _nlp(args: argparse.Namespace, method: str, request: Any) -> Any:
    from aisemble.nlp.v1 import nlp_service_pb2_grpc

    return call_gateway(args, nlp_service_pb2_grpc.NlpServiceStub, method, request)


def _embed(args: argparse.Namespace) -> int:
    from aisemble.nlp.v1 import nlp_service_pb2 as pb

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


def _common(parser: argparse.ArgumentParser, model_help: str) -> None:
    parser.add_argument("texts", nargs="+", metavar="TEXT", help=_TEXTS_HELP)
    parser.add_argument("--model", default="auto", help=model_help)
    parser.add_argument("--json", action="store_true", help="print the response as one JSON object")
    add_gateway_arguments(parser, timeout=60.0)


def add_embed_parser(sub: Any) -> argparse.ArgumentParser:
    """`embed` (returned, so that more ways to send texts can be added to it)."""
    embed = sub.add_parser("embed", help="sentence embeddings of texts (NlpService.Embed)")
    _common(embed, "an EMBEDDING model, or auto (default)")
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
