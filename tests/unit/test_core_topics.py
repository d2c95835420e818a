"""Topic names and the partitioner that every CaseBridge client shares."""

from __future__ import annotations

import pytest

from casebridge.core import topics


@pytest.mark.parametrize(
    ("key", "expected"),
    [  # values of Kafka's own Utils.murmur2 (clients/src/test/.../UtilsTest.java)
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_kafkas_java_implementation(key: bytes, expected: int) -> None:
    """murmur2 gives the same 32-bit hashes as Kafka's Java clients."""
    assert topics.murmur2(key) == expected


def test_partition_for_is_the_positive_hash_modulo_the_partition_count() -> None:
    """partition_for masks the sign bit, as Kafka's toPositive does, and stays in range."""
    assert topics.partition_for(b"foobar", 6) == (-790332482 & 0x7FFFFFFF) % 6
    assert {topics.partition_for(f"CB-{n}".encode(), 6) for n in range(200)} == set(range(6))


def test_outbox_and_inbox_names_round_trip_to_their_owner() -> None:
    """cb.out.P and cb.in.P name their participant; other topics have no owner."""
    assert topics.owner_of(topics.outbox("KH.CWCC")) == "KH.CWCC"
    assert topics.inbox_owner(topics.inbox("KH.CWCC")) == "KH.CWCC"
    assert topics.owner_of(topics.inbox("KH.CWCC")) is None
    assert topics.owner_of(topics.AUDIT) is None


@pytest.mark.parametrize(
    ("topic", "ends"),
    [
        ("cb.xb.TH.KH", ("TH", "KH")),
        ("TH.cb.xb.TH.REG", ("TH", "REG")),  # mirrored into the secretariat's cluster, alias kept
        ("KH.cb.xb.TH.REG", None),  # an alias that is not the corridor's origin
        ("cb.xb.TH", None),
        ("cb.xb.TH.KH.x", None),
        ("cb.out.TH.MSDHS", None),
        ("TH.cb.audit", None),
    ],
)
def test_corridor_ends_names_origin_and_destination(topic: str, ends: tuple[str, str] | None) -> None:
    """Only corridor names (plain, or with the source alias of a DefaultReplicationPolicy) have ends."""
    assert topics.corridor_ends(topic) == ends
    if ends is not None and not topic.startswith("TH.cb"):
        assert topics.corridor(*ends) == topic
