"""Protection on the real broker (issue 14): a node process stores encrypted, shreds, exports stats.

A real ``casebridge node run`` process for KH.MOSVY on the session's broker (as its own Kafka
user, with the ACLs of the directory). The test seals events from TH.MSDHS and puts them on the
node's inbox topic as the router would; everything else is the node's own doing.
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

from casebridge.core import sealing
from casebridge.core.jsonform import to_json
from casebridge.node import service, store
from casebridge.runtime import localnet
from casebridge.runtime.kafka import new_consumer, new_producer
from tests.conftest import KafkaHandle
from tests.support import canaried, fresh_name
from tests.unit.envelope_factories import example_payload

pytestmark = pytest.mark.kafka
NODE, SENDER = "KH.MOSVY", "TH.MSDHS"
CANARY = f"CANARY-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def net(kafka: KafkaHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.LocalNet]:
    """Trust, topics and users for a local network on the session broker, and one node process."""
    settings = replace(kafka.settings, home=tmp_path_factory.mktemp("protecthome"))
    network = localnet.LocalNet(settings, localnet.prepare(settings))
    try:
        network.start_node(NODE)
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
    if NODE not in net.services or net.services[NODE].process.poll() is not None:
        net.start_node(NODE)
        net.wait_healthy()
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
