"""Protection on the real broker (issue 14): encrypted at rest and shredded, statistics, handling
codes enforced by node and router, consent withdrawal propagated.

Real processes on the session's broker, each as its own Kafka user with the directory's ACLs:
the router and the nodes of TH.MSDHS (the provider), KH.MOSVY and VN.MOLISA. The shredding and
statistics tests put sealed envelopes straight on KH.MOSVY's inbox topic, as the router would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from casebridge.core import access, sealing
from casebridge.core.jsonform import to_json
from casebridge.core.model import Header
from casebridge.demo import localnet
from casebridge.node import service, store
from casebridge.runtime.kafka import new_consumer, new_producer
from tests.support import KafkaHandle, canaried, fresh_name
from tests.unit.envelope_factories import example_payload

pytestmark = pytest.mark.kafka
NODE, SENDER, THIRD = "KH.MOSVY", "TH.MSDHS", "VN.MOLISA"
CANARY = f"CANARY-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def net(kafka: KafkaHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.LocalNet]:
    """Trust, topics and users for a local network on the session broker; router and three nodes."""
    settings = replace(kafka.settings, home=tmp_path_factory.mktemp("protecthome"))
    network = localnet.LocalNet(settings, localnet.prepare(settings))
    try:
        network.spawn("router", ["router", "run"], principal=access.ROUTER)
        for participant in (SENDER, NODE, THIRD):
            network.start_node(participant)
        network.wait_healthy()
        yield network
    finally:
        network.stop()


def deliver(net: localnet.LocalNet, case_refs: list[str], payload: dict[str, Any]) -> list[str]:
    """Seal one return plan per case as TH.MSDHS and put them on the node's inbox, as the router does."""
    sender = store.connect(net.settings.home / "sender" / f"{uuid.uuid4().hex}.sqlite")
    now, envelopes, ids = datetime.now(UTC), [], []
    for case_ref in case_refs:
        doc = {"event_type": "return_plan.proposed", "case_ref": case_ref, "to": ["KH"], "payload": payload}
        sent = service.submit(net.world, net.world.identity(SENDER), sender, doc, now)
        row = store.outbox_row(sender, sent.event_id)
        assert row is not None and row.envelope is not None, sent
        envelopes.append((case_ref, row.envelope))
        ids.append(sent.event_id)
    asyncio.run(produce(net, f"cb.in.{NODE}", envelopes))
    return ids


async def produce(net: localnet.LocalNet, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = new_producer(net.settings)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def event_types_on(net: localnet.LocalNet, topic: str, case_ref: str, want: str) -> list[str]:
    """Event types of the envelopes of ``case_ref`` on ``topic``, read until ``want`` is among them."""
    consumer = new_consumer(net.settings, topic, group_id=fresh_name("group"))
    await consumer.start()
    found: list[str] = []
    try:
        async with asyncio.timeout(60):
            while want not in found:
                batch = await consumer.getmany(timeout_ms=500)
                for message in (m for ms in batch.values() for m in ms if m.key == case_ref.encode()):
                    verified = sealing.verify(message.value, net.world.directory, datetime.now(UTC),
                                              net.world.max_age, schemas=net.world.schemas)
                    found.append(verified.header.event_type)
    finally:
        await consumer.stop()
    return found


def until(check: Any, what: str, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy (the node works asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise TimeoutError(what)


def running(net: localnet.LocalNet, who: str) -> None:
    """Start ``who``'s node again if a test before stopped it (the shredding test does)."""
    if who not in net.services or net.services[who].process.poll() is not None:
        net.start_node(who)
        net.wait_healthy()


def files_with(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_shredded_case_leaves_no_canary_anywhere_and_reads_as_gone(
        net: localnet.LocalNet, kafka: KafkaHandle) -> None:
    """Canaries delivered through Kafka are readable until the case is shredded; then the API answers
    410 with metadata only, the notice goes out, and no canary is in the store, its WAL, the key
    file, the node's log or any Kafka segment."""
    case_ref = f"CB-SHRED-{uuid.uuid4().hex[:8]}"
    payload = canaried(to_json(example_payload("return_plan.proposed")), CANARY)
    (event_id,) = deliver(net, [case_ref], payload)
    status, body = until(lambda: (got := net.call(NODE, "GET", f"/records/{event_id}"))[0] == 200 and got,
                         "the node stored the event")
    assert CANARY in json.dumps(body["payload"]) and body["handling"]["code"] == "H2"
    status, shred = net.call(NODE, "POST", f"/cases/{case_ref}/shred", {"reason": "data_subject_request"})
    assert status == 200 and shred["records"] == 1 and shred["notice_status"] == "queued"
    status, gone = net.call(NODE, "GET", f"/records/{event_id}")
    assert status == 410 and "payload" not in gone and gone["shredded"]["reason"] == "data_subject_request"
    assert "case.shredded" in asyncio.run(event_types_on(net, f"cb.out.{NODE}", case_ref, "case.shredded"))
    net.stop_service(NODE)
    node_dir = net.settings.home / "nodes" / NODE
    assert {p.name for p in node_dir.iterdir()} >= {"node.sqlite", "keys.sqlite"}
    assert files_with(node_dir, CANARY.encode()) == []
    assert files_with(net.settings.home / "logs", CANARY.encode()) == []
    assert kafka.spec is not None, "the segment check needs the launcher's broker and its data folder"
    assert files_with(kafka.spec.state_dir, CANARY.encode()) == []


def test_the_stats_export_counts_what_came_through_the_broker(net: localnet.LocalNet, tmp_path: Path) -> None:
    """Twelve cases delivered through Kafka to the node's encrypted store make one released cell."""
    running(net, NODE)
    cases = [f"CB-STATS-{uuid.uuid4().hex[:8]}" for _ in range(12)]
    ids = deliver(net, cases, to_json(example_payload("return_plan.proposed")))
    until(lambda: all(net.call(NODE, "GET", f"/records/{i}")[0] == 200 for i in ids), "all stored")
    done = subprocess.run(
        [sys.executable, "-m", "casebridge.cli", "stats", "export", "--as", NODE, "--out", str(tmp_path)],
        env=net.env(NODE), capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "stats.csv").read_text().splitlines()
    assert rows[0].endswith(",victims") and all(int(r.rsplit(",", 1)[1]) >= 11 for r in rows[1:])
    assert sum(int(r.rsplit(",", 1)[1]) for r in rows[1:]) >= 12


def posted(net: localnet.LocalNet, who: str, path: str, body: Any, want: int = 202) -> Any:
    status, answer = net.call(who, "POST", path, body)
    assert status == want, answer
    return answer


def stored(net: localnet.LocalNet, who: str, event_id: str) -> Any:
    """The record once ``who``'s node has stored it."""
    return until(lambda: (got := net.call(who, "GET", f"/records/{event_id}"))[0] == 200 and got[1],
                 f"{who} stored {event_id}")


def unpermitted_forward(net: localnet.LocalNet, record_id: str, case_ref: str) -> bytes:
    """What a node that skipped its own check would publish: an H2 forward without permission."""
    head = Header(event_id=str(uuid.uuid4()), event_type="return_plan.proposed", sender=NODE,
                  sender_key_id="", created_at=datetime.now(UTC), case_ref=case_ref, to=("VN",),
                  handling_code="H2", forward_of=record_id, sequence=10_000)
    payload = {"operational": example_payload("return_plan.proposed")["operational"]}
    return sealing.seal(head, payload, net.world.identity(NODE), {THIRD: frozenset({"operational"})},
                        net.world.directory, datetime.now(UTC), schemas=net.world.schemas)


def test_an_h2_forward_is_refused_by_node_and_router_until_the_provider_permits_it(
        net: localnet.LocalNet) -> None:
    """KH.MOSVY's forward of TH.MSDHS's H2 record to VN is refused (its node: 422; a forward sent
    past the node: quarantined by the router, receipt.rejected); after TH's signed permission the
    same forward reaches VN.MOLISA, which sees what it forwards."""
    running(net, NODE)
    case_ref = f"CB-H2-{uuid.uuid4().hex[:8]}"
    plan = to_json(example_payload("return_plan.proposed"))
    sent = posted(net, SENDER, "/events", {"event_type": "return_plan.proposed", "case_ref": case_ref,
                                           "to": ["KH"], "handling_code": "H2", "payload": plan})
    stored(net, NODE, sent["event_id"])
    refused = posted(net, NODE, f"/records/{sent['event_id']}/forward", {"to": ["VN"]}, 422)
    assert refused["code"] == "handling_restricted"
    crafted = unpermitted_forward(net, sent["event_id"], case_ref)
    crafted_id = sealing.verify(crafted, net.world.directory, datetime.now(UTC), net.world.max_age,
                                schemas=net.world.schemas).header.event_id
    asyncio.run(produce(net, f"cb.out.{NODE}", [(case_ref, crafted)]))
    receipt = until(lambda: (got := net.call(NODE, "GET", f"/events/{crafted_id}"))[0] == 200 and got[1],
                    "the router's receipt.rejected")
    assert receipt["receipts"][0]["kind"] == "rejected"
    assert receipt["receipts"][0]["reason"] == "handling_restricted"
    posted(net, SENDER, f"/events/{sent['event_id']}/permissions", {"forwarder": NODE, "to": ["VN"]})
    until(lambda: any(e["event_type"] == "handling.permission_granted" and e["case_ref"] == case_ref
                      for e in net.call(NODE, "GET", "/inbox?limit=500")[1]["events"]), "the permission")
    forwarded = posted(net, NODE, f"/records/{sent['event_id']}/forward", {"to": ["VN"]})
    assert THIRD in forwarded["recipients"]
    third = stored(net, THIRD, forwarded["event_id"])
    assert third["forward_of"] == sent["event_id"] and third["handling"]["code"] == "H2"


def test_a_consent_withdrawal_restricts_the_records_sent_under_it_at_the_recipient(
        net: localnet.LocalNet) -> None:
    """After TH.MSDHS records the victim's withdrawal of origin notification, KH.MOSVY's node shows
    the origin notification it received as restricted and will not forward it."""
    running(net, NODE)
    case_ref = f"CB-CONSENT-{uuid.uuid4().hex[:8]}"
    scope = {"case_ref": case_ref, "to": ["TH"], "consent_scopes": ["origin_notification"]}
    posted(net, SENDER, "/events", {"event_type": "consent.recorded", **scope})
    origin = posted(net, SENDER, "/events", {
        "event_type": "origin.notified", "case_ref": case_ref, "to": ["KH"],
        "payload": to_json(example_payload("origin.notified"))})
    assert "restricted" not in stored(net, NODE, origin["event_id"])
    posted(net, SENDER, "/events", {"event_type": "consent.withdrawn", **scope})
    restricted = until(lambda: net.call(NODE, "GET", f"/records/{origin['event_id']}")[1].get("restricted"),
                       "KH.MOSVY restricted the record")
    assert restricted["scopes"] == ["origin_notification"] and restricted["reason"] == "consent_withdrawn"
    refused = posted(net, NODE, f"/records/{origin['event_id']}/forward", {"to": ["VN"]}, 422)
    assert refused["code"] == "handling_restricted"
