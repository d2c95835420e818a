"""The topics of a CaseBridge network, derived from the directory, and their creation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from casebridge.runtime.kafka import ensure_topics
from casebridge.runtime.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


def network_topics(participants: Iterable[str], inbox_partitions: int = 3) -> list[TopicSpec]:
    """``cb.out.P`` has one partition (the sender's chain is a total order the router checks);
    ``cb.in.P`` is keyed by case; audit and quarantine are shared; directory and agreements are
    compacted."""
    specs: list[TopicSpec] = []
    for pid in sorted(participants):
        specs += [TopicSpec(f"cb.out.{pid}", 1), TopicSpec(f"cb.in.{pid}", inbox_partitions)]
    specs += [
        TopicSpec("cb.audit", 3),
        TopicSpec("cb.quarantine", 3),
        TopicSpec("cb.deadlines.tick", 3),
        TopicSpec("cb.directory", 1, compacted=True),
        TopicSpec("cb.agreements", 1, compacted=True),
    ]
    return specs


async def sync_topics(settings: Settings, specs: Iterable[TopicSpec], replication: int = 1) -> list[str]:
    """Create the missing topics; the names created."""
    created: list[str] = []
    groups: dict[tuple[int, bool], list[str]] = {}
    for spec in specs:
        groups.setdefault((spec.partitions, spec.compacted), []).append(spec.name)
    for (partitions, compacted), names in groups.items():
        config = {"cleanup.policy": "compact"} if compacted else {}
        if replication >= 3:
            config["min.insync.replicas"] = "2"
        created += await ensure_topics(settings, names, partitions, replication, config)
    return created
