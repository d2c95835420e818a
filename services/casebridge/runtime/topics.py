"""The topics of a CaseBridge network, derived from the directory, and their creation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from casebridge.core import topics as names
from casebridge.core.federation import Federation
from casebridge.core.model import REGION
from casebridge.runtime.kafka import ensure_topics
from casebridge.runtime.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


def network_topics(
    participants: Iterable[str], partitions: int = names.DEFAULT_PARTITIONS
) -> list[TopicSpec]:
    """``cb.out.P``, ``cb.in.P`` and the router's compacted state changelog have ``partitions``
    partitions each (co-partitioned: partition p of all of them holds the same cases); audit and
    quarantine are shared; directory and agreements are compacted."""
    specs: list[TopicSpec] = []
    for pid in sorted(participants):
        specs += [TopicSpec(names.outbox(pid), partitions), TopicSpec(names.inbox(pid), partitions)]
    specs += [
        TopicSpec(names.ROUTER_STATE, partitions, compacted=True),
        TopicSpec(names.AUDIT, names.AUDIT_PARTITIONS),
        TopicSpec(names.DEADLINES_STATE, names.AUDIT_PARTITIONS, compacted=True),
        TopicSpec(names.QUARANTINE, 3),
        TopicSpec(names.DIRECTORY, 1, compacted=True),
        TopicSpec(names.AGREEMENTS, 1, compacted=True),
    ]
    return specs


def cluster_topics(fed: Federation, member: str, participants: Iterable[str],
                   partitions: int = names.DEFAULT_PARTITIONS) -> list[TopicSpec]:
    """The topics of one member's cluster in a federation: its own participants' outboxes and
    inboxes, its services' topics, its outgoing corridors and the copies its MirrorMaker writes
    (made here first, so that they are co-partitioned with the outboxes: P partitions)."""
    own = fed.participants_of(fed.member(member), participants)
    base = [s for s in network_topics(own, partitions)
            if member == REGION or s.name not in (names.DIRECTORY, names.AGREEMENTS)]
    shared = [TopicSpec(names.DIRECTORY, 1, compacted=True), TopicSpec(names.AGREEMENTS, 1, compacted=True)]
    corridors = [TopicSpec(n, partitions) for n in (*fed.outgoing_corridors(member),
                                                    *fed.incoming_corridors(member))]
    audits = [TopicSpec(n, names.AUDIT_PARTITIONS) for n in fed.mirrored_audits()] if member == REGION else []
    return [*base, *(shared if member != REGION else []), *corridors, *audits]


async def sync_topics(settings: Settings, specs: Iterable[TopicSpec], replication: int = 1) -> list[str]:
    """Create the missing topics; the names created."""
    created: list[str] = []
    groups: dict[tuple[int, bool], list[str]] = {}
    for spec in specs:
        groups.setdefault((spec.partitions, spec.compacted), []).append(spec.name)
    for (partitions, compacted), topic_names in groups.items():
        config = {"cleanup.policy": "compact"} if compacted else {}
        if replication >= 3:
            config["min.insync.replicas"] = "2"
        created += await ensure_topics(settings, topic_names, partitions, replication, config)
    return created
