"""Which model served a call and why: the one Resolved type of the runners, and how a response says so."""

from __future__ import annotations

from dataclasses import dataclass

from aisemble.common.v1 import common_pb2
from aisemble.config.models import ModelSpec
from aisemble.hosting.backend import Backend

__all__ = ["MODEL_TRAILER", "Resolved", "selection_message"]

#: Trailing metadata naming the model that served the call (services and the gateway alike).
MODEL_TRAILER = "aisemble-model"


@dataclass(frozen=True)
class Resolved:
    """The model that serves a request and why."""

    spec: ModelSpec
    backend: Backend
    automatic: bool
    reason: str


def selection_message(resolved: Resolved) -> common_pb2.ModelSelection:
    """The `selection` every response carries."""
    return common_pb2.ModelSelection(
        model=resolved.spec.name,
        model_version=resolved.spec.version,
        automatic=resolved.automatic,
        reason=resolved.reason,
    )
