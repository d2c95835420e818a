"""The network end to end on a real, secured broker: nodes, router, tracker as processes (issue 5).

The module runs its own secured broker (SASL/SCRAM, ACLs from the directory; each service logs in
as its own principal; the tests publish crafted records as the admin), so that its fixed topic names
(``cb.out.*``, ``cb.in.*``, ``cb.audit`` …) and the router's state start empty.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from confluent_kafka import TopicPartition as KafkaPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from casebridge.core import access, avro, issued, sealing, topics
from casebridge.core.directory import sign_directory
from casebridge.core.keys import generate_identity
from casebridge.core.model import Header
from casebridge.demo import localnet, scenario
from casebridge.runtime import ckafka
from casebridge.runtime.kafka import new_consumer, new_producer
from casebridge.runtime.keystore import directory_from_keystore, read_participants
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import PARTICIPANTS
from tests.support import launcher_broker

pytestmark = pytest.mark.kafka
SCALE = {"CASEBRIDGE_DEADLINE_SCALE": f"{15.0 / (42 * 86400):.3e}"}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.LocalNet]:
    """A dedicated broker, and the demo's network on it."""
    source = launcher_broker(tmp_path_factory.mktemp("netbroker"), secure=True)
    handle = next(source)
    settings = replace(handle.settings, home=tmp_path_factory.mktemp("nethome"))
    network = localnet.start(settings, scenario.DEMO_NODES, SCALE)
    network.broker_dir = handle.spec.state_dir if handle.spec else None  # type: ignore[attr-defined]
    try:
        yield network
    finally:
        network.stop()
        for _ in source:
            pass


def say(line: str) -> None:
    print(line)


def test_the_demo_case_is_delivered_with_every_receipt(net: localnet.LocalNet) -> None:
    """Every step of the repatriation case reaches exactly its recipients, with signed receipts."""
    ok, ctx = scenario.run_case(net, net.world.schemas, say)
    assert ok
    cwcc = {e["event_type"]: e for e in scenario.inbox(net, "KH.CWCC") if e["case_ref"] == ctx.case_ref}
    assert set(cwcc) == {"return_plan.proposed", "handover.scheduled"}
    assert set(cwcc["handover.scheduled"]["categories"]) == {"operational", "logistics"}
    mosvy = [e for e in scenario.inbox(net, "KH.MOSVY") if e["case_ref"] == ctx.case_ref]
    assert "origin.notified" in {e["event_type"] for e in mosvy}
    handover = next(e for e in mosvy if e["event_type"] == "handover.completed")
    assert set(handover["payload"]["operational"]) >= {"statement", "handing", "receiving"}


def test_an_unanswered_request_breaches_its_deadline(net: localnet.LocalNet) -> None:
    """A verification request nobody answers raises sla.breached to the origin's focal point."""
    assert scenario.run_breach(net, net.world.schemas, say)


def test_the_router_refuses_a_misdirected_envelope(net: localnet.LocalNet) -> None:
    """An envelope in another participant's outbox is quarantined and its sender told."""
    assert scenario.run_misdirected(net, net.world, say)


# --- one test per reject code through the running router ------------------------------------


def header(**fields: Any) -> Header:
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "return_plan.proposed",
        "sender": "TH.MSDHS",
        "sender_key_id": "",
        "created_at": datetime.now(UTC),
        "case_ref": f"CB-T-{uuid.uuid4().hex[:8]}",
        "to": ("KH",),
        "sequence": 0,
    }
    return Header(**{**base, **fields})


PLAN = {
    "operational": {
        "plan_ref": "RP-T",
        "window_start": datetime.now(UTC).date(),
        "window_end": datetime.now(UTC).date(),
        "checkpoint": "Poipet",
        "receiving_agency": None,
        "transit_centre": None,
        "note": None,
    }
}
ORIGIN = {
    "operational": {"identified_at": datetime.now(UTC), "host_country": "TH", "shelter": None, "note": None}
}


def seal(
    net: localnet.LocalNet,
    head: Header,
    payload: dict[str, Any],
    grants: dict[str, frozenset[str]] | None = None,
    signer: str = "TH.MSDHS",
) -> bytes:
    identity = net.world.identity(signer)
    return sealing.seal(
        head,
        payload,
        identity,
        grants or {"KH.MOSVY": frozenset({"operational"})},
        net.world.directory,
        datetime.now(UTC),
        schemas=net.world.schemas,
    )


def forged(net: localnet.LocalNet, head: Header) -> bytes:
    """A valid envelope whose signature is then replaced by one made with another key."""
    data = seal(net, head, PLAN)
    outer = avro.decode(net.world.schemas, data, "casebridge.envelope.Sealed")
    outer["signature"] = Ed25519PrivateKey.generate().sign(outer["envelope"])
    return avro.encode(net.world.schemas, "casebridge.envelope.Sealed", outer)


def tampered(net: localnet.LocalNet, head: Header) -> bytes:
    data = bytearray(seal(net, head, PLAN))
    data[-80] ^= 0x01  # inside the signed body
    return bytes(data)


def unknown_key(net: localnet.LocalNet, head: Header) -> bytes:
    """Signed in TH.MSDHS's name with a key the directory has never listed."""
    stranger = generate_identity("TH.MSDHS")
    outer = avro.decode(net.world.schemas, seal(net, head, PLAN), "casebridge.envelope.Sealed")
    outer["key_id"] = stranger.signing_key_id
    outer["signature"] = stranger.signing_key.sign(outer["envelope"])
    return avro.encode(net.world.schemas, "casebridge.envelope.Sealed", outer)


CASES: list[tuple[str, str, Any, bool]] = [
    # (code, topic owner, make(net, header) -> bytes, the sender gets a receipt)
    ("bad_signature", "TH.MSDHS", forged, False),
    ("bad_signature", "TH.MSDHS", tampered, False),
    ("unknown_key", "TH.MSDHS", unknown_key, False),
    ("sender_topic_mismatch", "TH.RTP", lambda n, h: seal(n, h, PLAN), True),
    ("no_agreement", "TH.MSDHS", lambda n, h: seal(n, replace(h, to=("TH",)), PLAN), True),
    (
        "consent_missing",
        "TH.MSDHS",
        lambda n, h: seal(n, replace(h, event_type="origin.notified"), ORIGIN),
        True,
    ),
    (
        "recipient_not_permitted",
        "TH.MSDHS",
        lambda n, h: seal(n, replace(h, to=("KH.CCPCR",)), PLAN, {"KH.CCPCR": frozenset({"operational"})}),
        True,
    ),
]


def quarantine_codes(net: localnet.LocalNet, data: bytes) -> list[str]:
    """The codes of the quarantine records that keep exactly these bytes."""
    found = asyncio.run(quarantined(net.settings, net.world.schemas, 10_000, 2.0))
    return [q["code"] for q in found if q["original"] == data]


async def publish(settings: Settings, topic: str, key: bytes, *values: bytes) -> None:
    producer = new_producer(settings)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def quarantined(
    settings: Settings, schemas: avro.SchemaSet, count: int, timeout: float = 60.0
) -> list[dict[str, Any]]:
    consumer = new_consumer(settings, topics.QUARANTINE, group_id=None)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                batch = await consumer.getmany(timeout_ms=500)
                found += [
                    avro.decode(schemas, m.value, issued.QUARANTINED)
                    for msgs in batch.values()
                    for m in msgs
                ]
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return found


def test_every_inbox_record_parses_as_a_cloudevent(net: localnet.LocalNet) -> None:
    """After the case, a breach and a refusal, every record on every cb.in.* topic (deliveries, the
    router's receipt.rejected, the tracker's alerts, nodes' receipts) parses with the CloudEvents
    SDK in Kafka binary mode, with the event's own id and type."""
    from cloudevents.v1.kafka import KafkaMessage, from_binary

    records = inbox_records(net.settings)
    types = set()
    for headers, key, value in records:
        event = from_binary(KafkaMessage(headers=headers, key=key, value=value), data_unmarshaller=bytes)
        assert event["specversion"] == "1.0" and event.data == value
        types.add(event["type"])
    assert {"return_plan.proposed", "receipt.delivered", "receipt.rejected", "sla.breached"} <= types
    say(f"{len(records)} inbox records parsed as CloudEvents: {sorted(types)}")


def inbox_records(settings: Settings) -> list[tuple[dict[str, bytes], bytes | None, bytes]]:
    """(headers, key, value) of every committed record on every cb.in.* topic now."""
    reader = ckafka.consumer(settings, f"probe-{uuid.uuid4().hex[:6]}", **{"enable.partition.eof": True})
    names = [t for t in reader.list_topics(timeout=30).topics if t.startswith(topics.IN_PREFIX)]
    parts = [KafkaPartition(t, p, 0) for t in names for p in range(settings.partitions)]
    reader.assign(parts)
    remaining, found = {(tp.topic, tp.partition) for tp in parts}, []
    try:
        while remaining:
            for m in reader.consume(1000, 1.0):
                if m.error() is not None:
                    remaining.discard((m.topic(), m.partition()))
                    continue
                found.append((dict(m.headers() or []), m.key(), m.value()))
    finally:
        reader.close()
    return found


@pytest.mark.parametrize(
    ("code", "owner", "make", "receipt"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_each_reject_code_lands_in_quarantine(
    net: localnet.LocalNet, code: str, owner: str, make: Any, receipt: bool
) -> None:
    """A bad record is kept in cb.quarantine with its stable code; when the bytes verified, whoever
    wrote them (the owner of the outbox) gets a signed receipt.rejected."""
    head = header()
    data = make(net, head)
    asyncio.run(publish(net.settings, f"cb.out.{owner}", head.case_ref.encode(), data))
    assert scenario.wait_for(lambda: bool(quarantine_codes(net, data)), 60)
    assert quarantine_codes(net, data) == [code]  # kept once, with its code
    if receipt:
        assert scenario.wait_for(
            lambda: "REG.ROUTER" in scenario.receipts_from(net, owner, head.event_id, "rejected"), 30
        )


def test_a_replayed_event_is_quarantined_and_a_retransmission_dropped(net: localnet.LocalNet) -> None:
    """The same envelope published again (a retried publish) is delivered once and not quarantined;
    the same event id in other bytes is a replay; a good event after them is still delivered."""
    head = header()
    data = seal(net, head, PLAN)
    replayed = seal(net, head, PLAN)  # the same header sealed again: other bytes
    topic = "cb.out.TH.MSDHS"
    asyncio.run(publish(net.settings, topic, head.case_ref.encode(), data, data, replayed))
    assert scenario.wait_for(lambda: quarantine_codes(net, replayed) == ["replay"], 60)
    assert quarantine_codes(net, data) == []
    stored = scenario.inbox(net, "KH.MOSVY")
    assert sum(e["event_id"] == head.event_id for e in stored) == 1
    assert scenario.wait_for(
        lambda: "REG.ROUTER" in scenario.receipts_from(net, "TH.MSDHS", head.event_id, "rejected"), 30
    )
    ok, _ = scenario.run_case(net, net.world.schemas, say)  # the stream still flows
    assert ok


def test_a_duplicate_on_the_wire_is_stored_once(net: localnet.LocalNet) -> None:
    """The same envelope delivered twice to an inbox topic is stored once and receipted once."""
    head = header()
    data = seal(net, head, PLAN)
    asyncio.run(publish(net.settings, "cb.in.KH.MOSVY", head.case_ref.encode(), data, data, data))
    assert scenario.wait_for(
        lambda: any(e["event_id"] == head.event_id for e in scenario.inbox(net, "KH.MOSVY")), 30
    )
    follow = header(case_ref=head.case_ref)  # same partition: handled after the duplicates
    asyncio.run(publish(net.settings, "cb.in.KH.MOSVY", head.case_ref.encode(), seal(net, follow, PLAN)))
    assert scenario.wait_for(
        lambda: any(e["event_id"] == follow.event_id for e in scenario.inbox(net, "KH.MOSVY")), 30
    )
    assert sum(e["event_id"] == head.event_id for e in scenario.inbox(net, "KH.MOSVY")) == 1
    assert scenario.wait_for(
        lambda: scenario.receipts_from(net, "TH.MSDHS", head.event_id, "delivered") == {"KH.MOSVY"}, 30
    )


def test_a_router_killed_mid_stream_loses_nothing(net: localnet.LocalNet) -> None:
    """SIGKILL the router while events flow, start it again: every event is stored, once."""
    sent: list[str] = []
    for n in range(30):
        if n == 10:
            net.stop_service("router", signal.SIGKILL)
        if n == 20:
            net.spawn("router", ["router", "run"], principal=access.ROUTER)
        status, body = net.call("TH.MSDHS", "POST", "/events", scenario.return_plan(f"CB-K-{n % 4}", n))
        assert status == 202, body
        sent.append(body["event_id"])
    assert scenario.wait_for(
        lambda: set(sent) <= {e["event_id"] for e in scenario.inbox(net, "KH.MOSVY")}, 120
    )
    stored = [e["event_id"] for e in scenario.inbox(net, "KH.MOSVY") if e["event_id"] in set(sent)]
    assert sorted(stored) == sorted(sent)
    for plans in plans_by_case(net, set(sent)).values():  # per-case order preserved at the recipient
        assert plans == sorted(plans)


def plans_by_case(net: localnet.LocalNet, event_ids: set[str]) -> dict[str, list[int]]:
    """The plan numbers KH.MOSVY stored, per case, in the order it stored them."""
    by_case: dict[str, list[int]] = {}
    for event in scenario.inbox(net, "KH.MOSVY"):
        if event["event_id"] in event_ids:
            plan = event["payload"]["operational"]["plan_ref"]
            by_case.setdefault(event["case_ref"], []).append(int(plan.split("-")[1]))
    return by_case


async def all_topic_bytes(settings: Settings) -> bytes:
    """Every record of every topic, keys, values and headers, up to the end offsets of now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **settings.kafka_auth)
    await admin.start()
    try:
        described = await admin.describe_topics(await admin.list_topics())
    finally:
        await admin.close()
    parts = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    consumer = new_consumer(settings, group_id=None)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        chunks: list[bytes] = []
        async with asyncio.timeout(120):
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=1000)
                chunks += [
                    (m.key or b"") + (m.value or b"") + b"".join(v for _, v in m.headers)
                    for msgs in batch.values()
                    for m in msgs
                ]
        return b"".join(chunks)
    finally:
        await consumer.stop()


def test_no_personal_data_in_topic_bytes_broker_files_or_logs(net: localnet.LocalNet) -> None:
    """After the demo case, no canary of its personal data appears in plaintext anywhere."""
    ok, _ = scenario.run_case(net, net.world.schemas, say)
    assert ok
    wire = asyncio.run(all_topic_bytes(net.settings))
    assert len(wire) > 10_000
    places = {"topics": wire}
    places |= {str(p): p.read_bytes() for p in (net.settings.home / "logs").glob("*.log")}
    broker_dir: Path | None = getattr(net, "broker_dir", None)
    if broker_dir is not None:
        places |= {
            str(p): p.read_bytes() for p in broker_dir.rglob("*") if p.is_file() and p.suffix == ".log"
        }
    leaks = [
        (where, canary)
        for where, blob in places.items()
        for canary in scenario.CANARIES
        if canary.encode() in blob
    ]
    assert leaks == []


def test_a_revoked_key_is_quarantined_after_one_directory_refresh(net: localnet.LocalNet) -> None:
    """A directory revoking LA.MOLSW's key, published on cb.directory, takes effect without a
    restart: new events signed with it are quarantined (revoked_key); one signed before still opens."""
    sender, now = "LA.MOLSW", datetime.now(UTC)
    before_head = header(sender=sender, to=("TH",))
    before = seal(net, before_head, PLAN, {"TH.MSDHS": frozenset({"operational"})}, signer=sender)
    key_id = net.world.identity(sender).signing_key_id
    revoked_at = datetime.now(UTC)
    people = read_participants(PARTICIPANTS)
    directory = directory_from_keystore(
        net.world.keystore, people, revoked_at, timedelta(days=30), revoked={key_id: revoked_at}
    )
    assert directory.version > net.world.directory.version
    signed = sign_directory(net.world.schemas, directory, net.world.identity("REG.SECRETARIAT"))
    asyncio.run(publish(net.settings, "cb.directory", b"directory", signed))

    def newest_is_refused() -> bool:
        head = header(sender=sender, to=("TH",), created_at=datetime.now(UTC))
        data = seal(net, head, PLAN, {"TH.MSDHS": frozenset({"operational"})}, signer=sender)
        asyncio.run(publish(net.settings, f"cb.out.{sender}", head.case_ref.encode(), data))
        return scenario.wait_for(
            lambda: any(
                q["original"] == data and q["code"] == "revoked_key"
                for q in asyncio.run(quarantined(net.settings, net.world.schemas, 10_000, 2.0))
            ),
            10,
        )

    assert scenario.wait_for(newest_is_refused, 60)
    asyncio.run(publish(net.settings, f"cb.out.{sender}", before_head.case_ref.encode(), before))
    assert now < revoked_at
    assert scenario.wait_for(
        lambda: any(e["event_id"] == before_head.event_id for e in scenario.inbox(net, "TH.MSDHS")), 30
    )
