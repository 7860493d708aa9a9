"""`aisemble analyze` (MultimodalService.Analyze) and `aisemble ensemble complete|classify|detect`
(EnsembleService.Run) through the gateway."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from entrypoints.commands.gateway import add_gateway_arguments, call_gateway
from entrypoints.commands.inputs import read_image, read_texts
from entrypoints.commands.output import clip, print_json, print_table
from entrypoints.commands.vision import print_detections

__all__ = ["add_parsers"]


def _print_failures(failures: Any) -> None:
    if failures:
        print("\nfailed parts:")
        print_table(
            ("part", "code", "reason", "message"), [(f.part, f.code, f.reason, f.message) for f in failures], {"code"}
        )


def _analyze(args: argparse.Namespace) -> int:
    from aisemble.common.v1 import common_pb2
    from aisemble.multimodal.v1 import multimodal_service_pb2 as pb
    from aisemble.multimodal.v1 import multimodal_service_pb2_grpc

    request = pb.AnalyzeRequest(
        image=common_pb2.Image(data=read_image(args.image)),
        text=args.text,
        detection_model=args.detection_model,
        ocr_model=args.ocr_model,
        embedding_model=args.embedding_model,
        include_embedding=args.include_embedding,
    )
    if args.score_threshold is not None:
        request.score_threshold = args.score_threshold
    reply = call_gateway(args, multimodal_service_pb2_grpc.MultimodalServiceStub, "Analyze", request)
    if args.json:
        print_json(reply)
        return 0
    if reply.HasField("detection"):
        detection = reply.detection
        print(f"detection ({detection.selection.model}): {len(detection.detections)} objects")
        print_detections(detection.detections)
    if reply.HasField("ocr"):
        print(f"\nocr ({reply.ocr.selection.model}): {len(reply.ocr.lines)} lines")
        print_table(
            ("#", "score", "text"), [(i, f"{x.score:.3f}", clip(x.text, 60)) for i, x in enumerate(reply.ocr.lines)]
        )
    text = reply.text_analysis
    if text.HasField("language") and text.language.results:
        language = text.language.results[0]
        print(f"\nlanguage ({text.language.selection.model}): {language.language_code} {language.score:.3f}")
    if text.HasField("embedding"):
        print(f"embedding ({text.embedding.selection.model}): {text.embedding.dimensions} dimensions")
    print(f"\nmentions: {len(reply.mentions)}")
    if reply.mentions:
        sources = {pb.MENTION_SOURCE_DETECTION: "detection", pb.MENTION_SOURCE_OCR: "ocr"}
        rows = [
            (m.term, sources.get(m.source, "?"), m.matched_text, f"{m.score:.3f}", ",".join(map(str, m.item_indices)))
            for m in reply.mentions
        ]
        print_table(("term", "source", "matched text", "score", "items"), rows, {"score"})
    _print_failures(reply.part_failures)
    return 0


def _member(text: str) -> Any:
    """NAME[:WEIGHT[:TIMEOUT_S]] as an ensemble Member."""
    from aisemble.ensemble.v1 import ensemble_service_pb2 as pb

    name, *rest = text.split(":")
    if not name or len(rest) > 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME[:WEIGHT[:TIMEOUT_S]]")
    member = pb.Member(model=name)
    try:
        if rest and rest[0]:
            member.weight = float(rest[0])
        if len(rest) == 2 and rest[1]:
            member.timeout.FromNanoseconds(int(float(rest[1]) * 1e9))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: WEIGHT and TIMEOUT_S are numbers") from None
    return member


def _ensemble(args: argparse.Namespace) -> int:
    from aisemble.common.v1 import common_pb2
    from aisemble.ensemble.v1 import ensemble_service_pb2 as pb
    from aisemble.ensemble.v1 import ensemble_service_pb2_grpc
    from aisemble.llm.v1 import llm_service_pb2 as lpb
    from aisemble.nlp.v1 import nlp_service_pb2 as npb
    from aisemble.vision.v1 import vision_service_pb2 as vpb

    request = pb.RunRequest(members=args.member, min_successful=args.min_successful)
    if args.strategy:
        request.strategy = pb.Strategy.Value("STRATEGY_" + args.strategy.upper().replace("-", "_"))
    texts: list[str] = []
    if args.kind == "complete":
        completion = lpb.CompleteRequest(prompt=args.prompt)
        for name, value in (("max_output_tokens", args.max_tokens), ("temperature", args.temperature)):
            if value is not None:
                setattr(completion, name, value)
        request.completion.CopyFrom(completion)
    elif args.kind == "classify":
        texts = read_texts(args.texts)
        request.classification.CopyFrom(npb.ClassifyRequest(texts=texts, candidate_labels=args.label or []))
    else:
        request.detection.CopyFrom(vpb.DetectRequest(image=common_pb2.Image(data=read_image(args.image))))
        if args.score_threshold is not None:
            request.detection.score_threshold = args.score_threshold
    reply = call_gateway(args, ensemble_service_pb2_grpc.EnsembleServiceStub, "Run", request)
    if args.json:
        print_json(reply)
        return 0
    rows = []
    for result in reply.member_results:
        outcome = result.WhichOneof("outcome")
        failure = result.failure
        shown = f"failed: {failure.reason or failure.code} {failure.message}"
        rows.append(
            (
                result.model,
                f"{result.weight:g}",
                f"{result.latency.ToNanoseconds() / 1e6:.1f}",
                f"{result.confidence:.3f}",
                shown if outcome == "failure" else "ok",
            )
        )
    print(f"members ({pb.Strategy.Name(reply.strategy).removeprefix('STRATEGY_').lower()}):")
    print_table(
        ("model", "weight", "latency ms", "confidence", "outcome"), rows, {"weight", "latency ms", "confidence"}
    )
    kind = reply.WhichOneof("result")
    print()
    if kind == "completion":
        print(reply.completion.text)
        selection = reply.completion.selection
    elif kind == "classification":
        labels = [
            (i, r.labels[0].label if r.labels else "-", f"{r.labels[0].score:.3f}" if r.labels else "-", clip(t))
            for i, (t, r) in enumerate(zip(texts, reply.classification.results, strict=True))
        ]
        print_table(("#", "label", "score", "text"), labels, {"#", "score"})
        selection = reply.classification.selection
    else:
        print_detections(reply.detection.detections)
        selection = reply.detection.selection
    print(f"[ensemble: {selection.reason}]", file=sys.stderr)
    return 0


_STRATEGIES = ("highest-confidence", "weighted-vote", "probability-average", "weighted-box-fusion")


def add_parsers(sub: Any) -> None:
    """`analyze` and `ensemble` (sub: the top-level add_subparsers())."""
    analyze = sub.add_parser("analyze", help="an image and a text together (MultimodalService.Analyze)")
    analyze.add_argument("image", help="an image file; `-` reads it from stdin")
    analyze.add_argument("text", help="a text about the image (a caption, a question)")
    analyze.add_argument("--detection-model", default="", help="OBJECT_DETECTION model (default auto)")
    analyze.add_argument("--ocr-model", default="", help="OCR model (default auto)")
    analyze.add_argument("--embedding-model", default="", help="EMBEDDING model (default auto)")
    analyze.add_argument("--score-threshold", type=float, help="ignore detections scoring below this")
    analyze.add_argument("--include-embedding", action="store_true", help="return the text's vector (with --json)")
    analyze.add_argument("--json", action="store_true", help="print the response as one JSON object")
    add_gateway_arguments(analyze, timeout=60.0)
    analyze.set_defaults(handler=_analyze)

    ensemble = sub.add_parser("ensemble", help="one input on several models, combined (EnsembleService.Run)")
    kinds = ensemble.add_subparsers(dest="kind", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--member",
            type=_member,
            action="append",
            required=True,
            metavar="NAME[:WEIGHT[:TIMEOUT_S]]",
            help="a model of the ensemble (repeatable)",
        )
        parser.add_argument("--strategy", choices=_STRATEGIES, help="how to combine (default: the input's)")
        parser.add_argument("--min-successful", type=int, default=0, help="fewest members that must succeed")
        parser.add_argument("--json", action="store_true", help="print the response as one JSON object")
        add_gateway_arguments(parser, timeout=120.0)
        parser.set_defaults(handler=_ensemble)

    complete = kinds.add_parser("complete", help="a completion on every member")
    complete.add_argument("prompt")
    complete.add_argument("--max-tokens", type=int, help="max_output_tokens")
    complete.add_argument("--temperature", type=float, help="0 for greedy")
    common(complete)
    classify = kinds.add_parser("classify", help="a text classification on every member")
    classify.add_argument("texts", nargs="+", metavar="TEXT", help="texts; `-` reads one per line from stdin")
    classify.add_argument("--label", action="append", help="a candidate label for zero-shot (repeatable)")
    common(classify)
    detect = kinds.add_parser("detect", help="an object detection on every member")
    detect.add_argument("image", help="an image file; `-` reads it from stdin")
    detect.add_argument("--score-threshold", type=float, help="drop detections scoring below this")
    common(detect)
