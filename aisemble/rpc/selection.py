"""How a response says which model served it and why: the `selection` message and the trailing metadata."""

from __future__ import annotations

import urllib.parse

from aisemble.common.v1 import common_pb2
from aisemble.resolution import Resolved

__all__ = ["MODEL_TRAILER", "REASON_TRAILER", "quote_reason", "selection_message"]

#: Trailing metadata naming the model that served the call (services and the gateway alike).
MODEL_TRAILER = "aisemble-model"
#: Trailing metadata with the selector's reason (percent-encoded: metadata values are ASCII).
REASON_TRAILER = "aisemble-selection-reason"


def quote_reason(text: str) -> str:
    """A reason as a metadata value."""
    return urllib.parse.quote(text, safe=" ,;:()'=./-_<>~")


def selection_message(resolved: Resolved) -> common_pb2.ModelSelection:
    """The `selection` every response carries."""
    return common_pb2.ModelSelection(
        model=resolved.spec.name,
        model_version=resolved.spec.version,
        automatic=resolved.automatic,
        reason=resolved.reason,
    )
