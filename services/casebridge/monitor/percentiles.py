"""Nearest-rank percentiles and the latency summary the monitor's figures share (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    sum_ms: float


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` (None when empty)."""
    if not values:
        return None
    rank = max(1, -(-len(values) * share // 1))
    return values[int(rank) - 1]


def latency_of(values_ms: Iterable[float]) -> Latency:
    """Count, p50, p90, p99 and sum of durations in milliseconds, in any order."""
    ordered = sorted(values_ms)
    p50, p90, p99 = (percentile(ordered, share) for share in (0.5, 0.9, 0.99))
    return Latency(len(ordered), p50, p90, p99, sum(ordered))
