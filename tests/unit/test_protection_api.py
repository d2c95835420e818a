"""The node API's protection routes (``node.protection_api``) on a real store, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from casebridge.core.jsonform import to_json
from casebridge.node import service, store
from casebridge.node import vault as node_vault
from casebridge.node.app import Node, http_app
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World, bootstrap_network
from tests.support import canaried
from tests.unit.envelope_factories import example_payload

# http_app keys the node by a plain string; aiohttp's advice about AppKey is not this test's subject
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")

NOW = datetime.now(UTC)
CANARY = "CANARY-api-5be0"
CASE = "case-api"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One run-time network (keys generated, agreements signed) shared by this module's tests."""
    return bootstrap_network(tmp_path_factory.mktemp("network"), NOW - timedelta(hours=1))


def recipient_node(world: World, tmp_path: Path) -> tuple[Node, str]:
    """KH.MOSVY's node holding one H2 return plan of TH.MSDHS full of canaries."""
    sender = store.connect(tmp_path / "TH.MSDHS.sqlite")
    doc = {"event_type": "return_plan.proposed", "case_ref": CASE, "to": ["KH"],
           "payload": canaried(to_json(example_payload("return_plan.proposed")), CANARY)}
    sent = service.submit(world, world.identity("TH.MSDHS"), sender, doc, NOW)
    row = store.outbox_row(sender, sent.event_id)
    assert row is not None and row.envelope is not None
    conn = node_vault.prepare(store.connect(tmp_path / "KH" / "node.sqlite"))
    v = node_vault.open_vault(tmp_path / "KH", bytes(32))
    service.receive(world, world.identity("KH.MOSVY"), conn, row.envelope, NOW, v)
    return Node(Settings(), world, world.identity("KH.MOSVY"), conn, vault=v), sent.event_id


async def call(client: TestClient[Any, Any], method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = await client.request(method, path, json=body)
    return response.status, await response.json()


async def test_reads_forward_and_shred_answer_as_documented_and_log_no_content(
        world: World, tmp_path: Path) -> None:
    """200 with handling, 422 for an unpermitted H2 forward, 400 for a free-text reason, then 410
    Gone with metadata after shredding, 404 for the unknown; log lines carry ids and codes only."""
    node, event_id = recipient_node(world, tmp_path)
    with capture_logs() as logs:
        async with TestClient(TestServer(http_app(node))) as client:
            status, body = await call(client, "GET", f"/records/{event_id}")
            assert status == 200 and body["handling"]["code"] == "H2" and CANARY in str(body["payload"])
            status, page = await call(client, "GET", "/inbox")
            assert status == 200 and page["events"][0]["handling"]["code"] == "H2"
            status, body = await call(client, "POST", f"/records/{event_id}/forward", {"to": ["VN"]})
            assert (status, body["code"]) == (422, "handling_restricted")
            status, body = await call(client, "POST", f"/cases/{CASE}/shred", {"reason": "asked by Sokha"})
            assert (status, body["code"]) == (400, "malformed")
            status, body = await call(client, "POST", f"/cases/{CASE}/shred", {"reason": "court_order"})
            assert status == 200 and body["notice_status"] == "queued"
            status, body = await call(client, "GET", f"/records/{event_id}")
            assert status == 410 and "payload" not in body and body["shredded"]["reason"] == "court_order"
            assert (await call(client, "GET", "/records/nope"))[0] == 404
            assert (await call(client, "POST", f"/events/{event_id}/permissions",
                               {"forwarder": "VN.MOLISA", "to": ["LA"]}))[0] == 404
    lines = {(e["event"], e.get("code")) for e in logs}
    assert lines >= {("forward", "handling_restricted"), ("shredded", None)}
    assert CANARY not in str(logs)
