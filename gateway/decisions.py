"""The last `auto` resolutions of calls this gateway served, in a bounded ring (for ListRoutingDecisions)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from aisemble.common.v1 import common_pb2
from gateway.selector import Decision, Features

__all__ = ["DEFAULT_CAPACITY", "RoutingDecision", "RoutingLog"]

#: How many decisions a gateway keeps; older ones are dropped.
DEFAULT_CAPACITY = 256


@dataclass(frozen=True)
class RoutingDecision:
    """One `auto` resolution: when, for which method and task, the selection the caller saw, and the features and
    verdicts behind it. No part of the call's text is kept."""

    time: float
    method: str
    task: str
    selection: common_pb2.ModelSelection
    decision: Decision
    domain: str
    domain_source: str
    language: str


class RoutingLog:
    """The most recent `capacity` decisions, oldest dropped first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._ring: deque[RoutingDecision] = deque(maxlen=capacity)

    def record(self, method: str, selection: common_pb2.ModelSelection, decision: Decision, features: Features) -> None:
        """Keep one resolution (the oldest goes when the ring is full)."""
        self._ring.append(
            RoutingDecision(
                time=time.time(),
                method=method,
                task=features.task,
                selection=selection,
                decision=decision,
                domain=features.domain,
                domain_source=features.domain_source,
                language=features.language,
            )
        )

    def recent(self) -> list[RoutingDecision]:
        """Every kept decision, newest first."""
        return list(reversed(self._ring))

    def __len__(self) -> int:
        return len(self._ring)
