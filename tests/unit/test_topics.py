"""The topics of a network (``casebridge.runtime.topics.network_topics``)."""

from __future__ import annotations

from casebridge.runtime.topics import TopicSpec, network_topics

SHARED = {
    "cb.router.state": TopicSpec("cb.router.state", 6, compacted=True),
    "cb.audit": TopicSpec("cb.audit", 3),
    "cb.deadlines.state": TopicSpec("cb.deadlines.state", 3, compacted=True),
    "cb.quarantine": TopicSpec("cb.quarantine", 3),
    "cb.directory": TopicSpec("cb.directory", 1, compacted=True),
    "cb.agreements": TopicSpec("cb.agreements", 1, compacted=True),
}


def test_outboxes_inboxes_and_the_router_state_are_co_partitioned() -> None:
    """cb.out.P, cb.in.P and cb.router.state have the same partition count (6 by default)."""
    specs = {s.name: s for s in network_topics(["TH.MSDHS", "KH.MOSVY"])}
    for pid in ("TH.MSDHS", "KH.MOSVY"):
        assert specs[f"cb.out.{pid}"] == TopicSpec(f"cb.out.{pid}", 6)
        assert specs[f"cb.in.{pid}"] == TopicSpec(f"cb.in.{pid}", 6)
    assert specs["cb.router.state"] == TopicSpec("cb.router.state", 6, compacted=True)


def test_shared_topics_and_compaction() -> None:
    """Audit and quarantine are shared; the processors' state, directory and agreements are compacted."""
    specs = {s.name: s for s in network_topics(["TH.MSDHS"])}
    assert {n: specs[n] for n in SHARED} == SHARED
    assert {s.name for s in specs.values() if s.compacted} == {"cb.router.state", "cb.deadlines.state",
                                                                "cb.directory", "cb.agreements"}
    assert len(specs) == 2 + len(SHARED)


def test_partition_count_and_order() -> None:
    """The partition count is a parameter; participants come sorted, shared topics last."""
    specs = network_topics(["KH.MOSVY", "TH.MSDHS"], partitions=2)
    assert [s.name for s in specs[:4]] == [
        "cb.out.KH.MOSVY",
        "cb.in.KH.MOSVY",
        "cb.out.TH.MSDHS",
        "cb.in.TH.MSDHS",
    ]
    assert {s.partitions for s in specs if s.name.startswith(("cb.in.", "cb.out.", "cb.router."))} == {2}


def test_no_participants_leaves_the_shared_topics() -> None:
    """A network with no participants still has its shared topics, with no duplicates."""
    names = [s.name for s in network_topics([])]
    assert sorted(names) == sorted(SHARED)
