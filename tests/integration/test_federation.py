"""The federation on real clusters (issue 15): the secretariat's, TH's and KH's own secured KRaft
clusters on loopback, each with its own MirrorMaker 2 (pull, never push), router and tracker;
the nodes TH.MSDHS and KH.MOSVY on their country's cluster.

An event TH.MSDHS -> KH.MOSVY is stored once at KH and its signed ``delivered`` receipt comes back
to TH through the reverse corridor; each cluster holds only its own participants' topics; a
forged corridor record is quarantined by KH's router.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from casebridge.core import avro, issued, sealing, topics
from casebridge.core.model import Header
from casebridge.demo import federation, scenario
from casebridge.runtime import ckafka
from casebridge.runtime.settings import Settings

pytestmark = pytest.mark.kafka
NODES = ("TH.MSDHS", "KH.MOSVY")


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[federation.Federation]:
    """The federation of REG, TH and KH; it fails (never skips) when Kafka cannot be had."""
    home = tmp_path_factory.mktemp("federation")
    running = federation.up(replace(Settings.from_env(), home=home), NODES,
                            lambda m: print(f"[federation] {m}"))
    try:
        yield running
    finally:
        running.stop(lambda _m: None)


def records(settings: Settings, topic: str) -> list[tuple[dict[str, bytes], bytes]]:
    """(headers, value) of every committed record of ``topic`` now."""
    reader = ckafka.consumer(settings, f"probe-{uuid.uuid4().hex[:6]}", **{"enable.partition.eof": True})
    try:
        meta = reader.list_topics(topic, timeout=30).topics[topic]
        parts = [ckafka.TopicPartition(topic, p, 0) for p in meta.partitions]
        reader.assign(parts)
        remaining, found = {(tp.topic, tp.partition) for tp in parts}, []
        while remaining:
            for m in reader.consume(1000, 1.0):
                if m.error() is not None:
                    remaining.discard((m.topic(), m.partition()))
                    continue
                found.append((dict(m.headers() or []), m.value() or b""))
        return found
    finally:
        reader.close()


def topic_names(settings: Settings) -> set[str]:
    probe = ckafka.consumer(settings, "probe-topics")
    try:
        return set(probe.list_topics(timeout=30).topics)
    finally:
        probe.close()


def wait(check: Callable[[], bool], timeout: float = 90.0) -> bool:
    return scenario.wait_for(check, timeout)


def test_an_event_crosses_the_corridor_is_stored_once_and_its_receipt_comes_back(
    fed: federation.Federation,
) -> None:
    """TH.MSDHS -> KH.MOSVY: one copy on TH's corridor, one on KH's cb.in.KH.MOSVY (read_committed),
    stored once at KH; KH.MOSVY's signed delivered receipt reaches TH.MSDHS through cb.xb.KH.TH."""
    net = fed.net
    case_ref = f"CB-F-{uuid.uuid4().hex[:8]}"
    status, body = net.call("TH.MSDHS", "POST", "/events", scenario.return_plan(case_ref, 1))
    assert status == 202, body
    event_id = body["event_id"]
    assert wait(lambda: "KH.MOSVY" in scenario.receipts_from(net, "TH.MSDHS", event_id, "delivered"))
    stored = [e for e in scenario.inbox(net, "KH.MOSVY") if e["event_id"] == event_id]
    assert len(stored) == 1
    th, kh = fed.clusters["TH"].settings, fed.clusters["KH"].settings
    copies = [h for h, _ in records(kh, topics.inbox("KH.MOSVY")) if h.get("ce_id") == event_id.encode()]
    assert len(copies) == 1
    forwarded = [h for h, _ in records(th, "cb.xb.TH.KH") if h.get("ce_id") == event_id.encode()]
    assert len(forwarded) == 1


def test_each_cluster_holds_only_its_own_participants_topics(fed: federation.Federation) -> None:
    """KH's cluster has no cb.out.TH.* topic and TH's no cb.in.KH.* topic; the corridors and the
    secretariat's mirrored audits are where the topology puts them."""
    listed = {m: topic_names(c.settings) for m, c in fed.clusters.items()}
    assert not {t for t in listed["KH"] if t.startswith("cb.out.TH.")}
    assert not {t for t in listed["TH"] if t.startswith("cb.in.KH.")}
    assert {"cb.xb.TH.KH", "cb.xb.KH.TH"} <= listed["TH"] & listed["KH"]
    assert {"TH.cb.audit", "KH.cb.audit"} <= listed["REG"]


def test_a_forged_corridor_record_is_quarantined_by_the_receiving_router(fed: federation.Federation) -> None:
    """A validly signed VN.MOLISA envelope written into TH's corridor to KH (as if TH's router had
    been subverted) is mirrored, and KH's router quarantines it sender_topic_mismatch."""
    world = fed.net.world
    case_ref = f"CB-X-{uuid.uuid4().hex[:8]}"
    head = Header(event_id=str(uuid.uuid4()), event_type="return_plan.proposed", sender="VN.MOLISA",
                  sender_key_id="", created_at=datetime.now(UTC), case_ref=case_ref, to=("KH",), sequence=1)
    plan = {"operational": {"plan_ref": "RP-X", "window_start": datetime.now(UTC).date(),
                            "window_end": datetime.now(UTC).date(), "checkpoint": "Poipet",
                            "receiving_agency": None, "transit_centre": None, "note": None}}
    data = sealing.seal(head, plan, world.identity("VN.MOLISA"), {"KH.MOSVY": frozenset({"operational"})},
                        world.directory, datetime.now(UTC), schemas=world.schemas)
    producer = ckafka.producer(fed.clusters["TH"].settings)
    producer.produce("cb.xb.TH.KH", data, case_ref.encode())
    assert producer.flush(30) == 0
    kh = fed.clusters["KH"].settings

    def kept() -> list[str]:
        return [avro.decode(world.schemas, v, issued.QUARANTINED)["code"]
                for _, v in records(kh, topics.QUARANTINE)
                if avro.decode(world.schemas, v, issued.QUARANTINED)["original"] == data]

    assert wait(lambda: kept() == ["sender_topic_mismatch"])
    assert not [e for e in scenario.inbox(fed.net, "KH.MOSVY") if e["case_ref"] == case_ref]
