"""The one home of CaseBridge's Kafka names: topics, changelogs and the partitioner.

``cb.out.<participant>`` is written by that participant only, ``cb.in.<participant>`` read by it
only; both have ``partitions`` partitions keyed by case reference with Kafka's murmur2 partitioner
(the Java clients' default, librdkafka's ``murmur2_random``), so partition p of every outbox holds
the same cases and the router's state for those cases lives in partition p of its changelogs.

In a federation (one cluster per country), ``cb.xb.<FROM>.<TO>`` is the corridor from country FROM
to country TO: FROM's router writes there, on FROM's cluster, the envelopes it accepted for TO's
participants (unchanged bytes, same key and partition); TO's MirrorMaker copies it, under the same
name, into TO's cluster, where TO's router reads it.
"""

from __future__ import annotations

OUT_PREFIX = "cb.out."
IN_PREFIX = "cb.in."
XB_PREFIX = "cb.xb."  # corridor topics of a federation: cb.xb.<from country>.<to country>
AUDIT = "cb.audit"
QUARANTINE = "cb.quarantine"
DIRECTORY = "cb.directory"
AGREEMENTS = "cb.agreements"
DEADLINES_STATE = "cb.deadlines.state"  # the tracker's compacted changelog, co-partitioned with cb.audit
ROUTER_STATE = "cb.router.state"  # the router's compacted changelog, co-partitioned with cb.out.*
AUDIT_PARTITIONS = 3
DEFAULT_PARTITIONS = 6


def outbox(participant: str) -> str:
    return f"{OUT_PREFIX}{participant}"


def inbox(participant: str) -> str:
    return f"{IN_PREFIX}{participant}"


def corridor(origin: str, destination: str) -> str:
    """``cb.xb.TH.KH``: the envelopes TH's router accepted for KH's participants."""
    return f"{XB_PREFIX}{origin}.{destination}"


def corridor_ends(topic: str) -> tuple[str, str] | None:
    """``cb.xb.TH.KH`` -> ``("TH", "KH")``, also as mirrored with its source alias kept
    (``TH.cb.xb.TH.REG``: Kafka's DefaultReplicationPolicy); None for any other topic."""
    alias, dot, rest = topic.partition(".")
    if dot and rest.startswith(XB_PREFIX) and not topic.startswith(XB_PREFIX):
        ends = corridor_ends(rest)
        return ends if ends is not None and ends[0] == alias else None
    if not topic.startswith(XB_PREFIX):
        return None
    origin, dot, destination = topic[len(XB_PREFIX) :].partition(".")
    return (origin, destination) if dot and origin and destination and "." not in destination else None


def owner_of(topic: str) -> str | None:
    """``cb.out.TH.MSDHS`` -> ``TH.MSDHS``; None for a topic that is not an outbox."""
    return topic[len(OUT_PREFIX) :] if topic.startswith(OUT_PREFIX) else None


def inbox_owner(topic: str) -> str | None:
    """``cb.in.KH.MOSVY`` -> ``KH.MOSVY``; None for a topic that is not an inbox."""
    return topic[len(IN_PREFIX) :] if topic.startswith(IN_PREFIX) else None


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as a signed 32-bit int."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = length % 4
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a non-null key (``toPositive(murmur2) % n``)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
