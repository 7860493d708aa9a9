"""How members' results are combined, pure functions over protobuf results (no I/O)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aisemble.common.v1 import common_pb2
from aisemble.ensemble.v1 import ensemble_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2
from aisemble.nlp.v1 import nlp_service_pb2
from aisemble.vision.v1 import vision_service_pb2

__all__ = ["ALLOWED", "DEFAULT", "Success", "combine", "confidence"]

ALLOWED = {
    "completion": {pb.STRATEGY_HIGHEST_CONFIDENCE, pb.STRATEGY_WEIGHTED_VOTE},
    "classification": {pb.STRATEGY_HIGHEST_CONFIDENCE, pb.STRATEGY_WEIGHTED_VOTE, pb.STRATEGY_PROBABILITY_AVERAGE},
    "detection": {pb.STRATEGY_HIGHEST_CONFIDENCE, pb.STRATEGY_WEIGHTED_BOX_FUSION},
}
DEFAULT = {
    "completion": pb.STRATEGY_HIGHEST_CONFIDENCE,
    "classification": pb.STRATEGY_PROBABILITY_AVERAGE,
    "detection": pb.STRATEGY_WEIGHTED_BOX_FUSION,
}


@dataclass(frozen=True)
class Success:
    """A member that answered."""

    model: str
    weight: float
    result: Any
    confidence: float


def confidence(kind: str, result: Any) -> float:
    """What the strategies compare: mean token log-probability, mean top label score, mean detection score."""
    if kind == "completion":
        return float(result.mean_token_logprob)
    if kind == "classification":
        tops = [r.labels[0].score for r in result.results if r.labels]
        return sum(tops) / len(tops) if tops else 0.0
    scores = [d.score for d in result.detections]
    return sum(scores) / len(scores) if scores else 0.0


def _selection(model: str, reason: str) -> common_pb2.ModelSelection:
    return common_pb2.ModelSelection(model=model, reason=reason, rule="ensemble")


def _highest(kind: str, successes: Sequence[Success]) -> Any:
    # For log-probabilities (<= 0), weighting by multiplication would reward small weights; add log(weight).
    import math

    def score(s: Success) -> float:
        if kind == "completion":
            return s.confidence + math.log(max(s.weight, 1e-12))
        return s.confidence * s.weight

    best = max(successes, key=score)
    result = type(best.result)()
    result.CopyFrom(best.result)
    result.selection.CopyFrom(
        _selection(best.model, f"highest weight x confidence among {len(successes)} members: {best.model}")
    )
    return result


def _vote_completion(successes: Sequence[Success]) -> Any:
    votes: dict[str, float] = defaultdict(float)
    best_of: dict[str, Success] = {}
    for s in successes:
        key = s.result.text.strip()
        votes[key] += s.weight
        if key not in best_of or s.confidence > best_of[key].confidence:
            best_of[key] = s
    winner_text = max(votes, key=lambda k: (votes[k], best_of[k].confidence))
    winner = best_of[winner_text]
    result = llm_service_pb2.CompleteResponse()
    result.CopyFrom(winner.result)
    result.selection.CopyFrom(
        _selection(winner.model, f"weighted vote: {votes[winner_text]:g} of {sum(votes.values()):g} weight")
    )
    return result


def _classification(successes: Sequence[Success], strategy: int) -> Any:
    texts = max(len(s.result.results) for s in successes)
    total_weight = sum(s.weight for s in successes) or 1.0
    combined = nlp_service_pb2.ClassifyResponse()
    for index in range(texts):
        scores: dict[str, float] = defaultdict(float)
        for s in successes:
            if index >= len(s.result.results):
                continue
            labels = s.result.results[index].labels
            if strategy == pb.STRATEGY_WEIGHTED_VOTE:
                if labels:
                    scores[labels[0].label] += s.weight
            else:
                for label in labels:
                    scores[label.label] += s.weight * label.score
        ordered = sorted(scores.items(), key=lambda kv: -kv[1])
        result = combined.results.add()
        for label, value in ordered:
            result.labels.add(label=label, score=value / total_weight)
    how = "weighted vote" if strategy == pb.STRATEGY_WEIGHTED_VOTE else "weighted probability average"
    combined.selection.CopyFrom(_selection("", f"{how} over {len(successes)} members"))
    return combined


def _iou(a: Any, b: Any) -> float:
    x1, y1 = max(a.x_min, b.x_min), max(a.y_min, b.y_min)
    x2, y2 = min(a.x_max, b.x_max), min(a.y_max, b.y_max)
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a.x_max - a.x_min) * (a.y_max - a.y_min) + (b.x_max - b.x_min) * (b.y_max - b.y_min) - inter
    return inter / union if union > 0 else 0.0


def _box_fusion(successes: Sequence[Success], iou_threshold: float = 0.55) -> Any:
    """Weighted box fusion (Solovyev et al.): cluster by class and IoU, average coordinates by score x weight."""
    boxes: list[tuple[Any, float]] = [(d, s.weight) for s in successes for d in s.result.detections]
    boxes.sort(key=lambda item: -item[0].score * item[1])
    clusters: list[list[tuple[Any, float]]] = []
    fused: list[vision_service_pb2.Detection] = []
    for detection, weight in boxes:
        for index, cluster in enumerate(clusters):
            if (
                fused[index].class_name == detection.class_name
                and _iou(fused[index].box, detection.box) > iou_threshold
            ):
                cluster.append((detection, weight))
                fused[index] = _fuse(cluster, len(successes))
                break
        else:
            clusters.append([(detection, weight)])
            fused.append(_fuse(clusters[-1], len(successes)))
    first = successes[0].result
    fused.sort(key=lambda d: -d.score)
    combined = vision_service_pb2.DetectResponse(
        detections=fused, image_width=first.image_width, image_height=first.image_height
    )
    combined.selection.CopyFrom(
        _selection("", f"weighted box fusion of {len(boxes)} boxes from {len(successes)} members")
    )
    return combined


def _fuse(cluster: Sequence[tuple[Any, float]], members: int) -> vision_service_pb2.Detection:
    weights = [d.score * w for d, w in cluster]
    total = sum(weights) or 1.0

    def mean(attribute: str) -> float:
        return sum(getattr(d.box, attribute) * w for (d, _), w in zip(cluster, weights, strict=True)) / total

    head = cluster[0][0]
    # A box found by few members is less certain: scale by the share of members that found it.
    score = sum(d.score for d, _ in cluster) / len(cluster) * min(len(cluster), members) / members
    return vision_service_pb2.Detection(
        box=common_pb2.BoundingBox(x_min=mean("x_min"), y_min=mean("y_min"), x_max=mean("x_max"), y_max=mean("y_max")),
        class_id=head.class_id,
        class_name=head.class_name,
        score=score,
    )


def combine(kind: str, strategy: int, successes: Sequence[Success]) -> Any:
    """The combined result of the successful members."""
    if strategy == pb.STRATEGY_HIGHEST_CONFIDENCE:
        combined = _highest(kind, successes)
    elif kind == "completion":
        combined = _vote_completion(successes)
    elif kind == "classification":
        combined = _classification(successes, strategy)
    else:
        combined = _box_fusion(successes)
    if kind == "completion":
        usage = combined.usage
        usage.prompt_tokens = sum(s.result.usage.prompt_tokens for s in successes)
        usage.output_tokens = sum(s.result.usage.output_tokens for s in successes)
        usage.total_tokens = usage.prompt_tokens + usage.output_tokens
        usage.cost = sum(s.result.usage.cost for s in successes)
    return combined
