"""The ensemble strategies as pure functions over results."""

import pytest

from aisemble.common.v1 import common_pb2
from aisemble.ensemble.v1 import ensemble_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2
from aisemble.nlp.v1 import nlp_service_pb2
from aisemble.vision.v1 import vision_service_pb2
from services.ensemble.strategies import Success, combine, confidence


def _classified(*pairs):
    response = nlp_service_pb2.ClassifyResponse()
    result = response.results.add()
    for label, score in pairs:
        result.labels.add(label=label, score=score)
    return response


def _success(model, weight, result, kind):
    return Success(model, weight, result, confidence(kind, result))


def test_probability_average_is_weighted_and_sums_to_one():
    a = _classified(("medical", 0.6), ("legal", 0.4))
    b = _classified(("legal", 0.9), ("medical", 0.1))
    combined = combine(
        "classification",
        pb.STRATEGY_PROBABILITY_AVERAGE,
        [_success("a", 3.0, a, "classification"), _success("b", 1.0, b, "classification")],
    )
    labels = {label.label: label.score for label in combined.results[0].labels}
    assert labels == pytest.approx({"medical": (3 * 0.6 + 0.1) / 4, "legal": (3 * 0.4 + 0.9) / 4})
    assert combined.results[0].labels[0].label == "legal"  # 0.525 vs 0.475
    assert sum(labels.values()) == pytest.approx(1.0)


def test_weighted_vote_counts_top_labels():
    votes = [_classified(("x", 0.9)), _classified(("y", 0.6)), _classified(("y", 0.55))]
    combined = combine(
        "classification",
        pb.STRATEGY_WEIGHTED_VOTE,
        [_success(str(i), 1.0, v, "classification") for i, v in enumerate(votes)],
    )
    assert combined.results[0].labels[0].label == "y"


def test_highest_confidence_completion_uses_logprob_and_sums_usage():
    low = llm_service_pb2.CompleteResponse(
        text="meh", mean_token_logprob=-2.0, usage=common_pb2.Usage(output_tokens=3, cost=0.1)
    )
    high = llm_service_pb2.CompleteResponse(
        text="sure", mean_token_logprob=-0.2, usage=common_pb2.Usage(output_tokens=4, cost=0.2)
    )
    combined = combine(
        "completion",
        pb.STRATEGY_HIGHEST_CONFIDENCE,
        [_success("low", 1.0, low, "completion"), _success("high", 1.0, high, "completion")],
    )
    assert combined.text == "sure" and combined.selection.model == "high"
    assert combined.usage.output_tokens == 7 and combined.usage.cost == pytest.approx(0.3)


def test_completion_vote_trims_whitespace():
    answers = [" Paris", "Paris ", "Lyon"]
    results = [llm_service_pb2.CompleteResponse(text=t, mean_token_logprob=-1.0) for t in answers]
    combined = combine(
        "completion", pb.STRATEGY_WEIGHTED_VOTE, [_success(str(i), 1.0, r, "completion") for i, r in enumerate(results)]
    )
    assert combined.text.strip() == "Paris"


def _detections(*boxes):
    response = vision_service_pb2.DetectResponse(image_width=100, image_height=100)
    for (x1, y1, x2, y2), score, name in boxes:
        response.detections.add(
            box=common_pb2.BoundingBox(x_min=x1, y_min=y1, x_max=x2, y_max=y2), score=score, class_name=name
        )
    return response


def test_weighted_box_fusion_merges_overlapping_boxes_of_one_class():
    a = _detections(((10, 10, 50, 50), 0.9, "person"), ((60, 60, 90, 90), 0.8, "dog"))
    b = _detections(((12, 12, 52, 52), 0.7, "person"))
    combined = combine(
        "detection",
        pb.STRATEGY_WEIGHTED_BOX_FUSION,
        [_success("a", 1.0, a, "detection"), _success("b", 1.0, b, "detection")],
    )
    assert [d.class_name for d in combined.detections] == ["person", "dog"]
    person = combined.detections[0].box
    assert 10 < person.x_min < 12 and 50 < person.x_max < 52
    assert combined.detections[0].score > combined.detections[1].score  # found by both members
