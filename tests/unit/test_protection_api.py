"""The node API's protection routes (``node.protection_api``) on a real store, without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from casebridge.core.jsonform import to_json
from casebridge.node import auth, service, store
from casebridge.node import vault as node_vault
from casebridge.node.app import ROUTE_SCOPES, Node, http_app
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World, bootstrap_network
from tests.support import canaried
from tests.unit.envelope_factories import example_payload

# http_app keys the node by a plain string; aiohttp's advice about AppKey is not this test's subject
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")

NOW = datetime.now(UTC)
CANARY = "CANARY-api-5be0"
CASE = "case-api"
ME = "KH.MOSVY"
Client = TestClient[Any, Any]


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
    service.receive(world, world.identity(ME), conn, row.envelope, NOW, v)
    return Node(Settings(home=tmp_path), world, world.identity(ME), conn, vault=v), sent.event_id


def queued(node: Node) -> list[str]:
    """The event ids in the node's outbox waiting to be published (the receipt.delivered at first)."""
    return [row.event_id for row in store.queued(node.conn)]


def add_client(node: Node, client_id: str, scopes: tuple[str, ...] = auth.SCOPES) -> str:
    """A client of the node with these scopes; its token."""
    path = auth.clients_file(node.settings.home, node.participant)
    token = auth.new_token()
    auth.save_clients(path, auth.add_client(auth.load_clients(path), client_id, scopes, token, NOW))
    return token


async def call(client: Client, method: str, path: str, body: Any = None,
               token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.request(method, path, json=body, headers=headers)
    return response.status, await response.json()


async def test_reads_forward_and_shred_answer_as_documented_and_log_no_content(
        world: World, tmp_path: Path) -> None:
    """200 with handling, 422 for an unpermitted H2 forward, 400 for a free-text reason, then 410
    Gone with metadata after shredding, 404 for the unknown; log lines carry ids and codes only."""
    node, event_id = recipient_node(world, tmp_path)
    hub = add_client(node, "hub")
    with capture_logs() as logs:
        async with TestClient(TestServer(http_app(node))) as client:
            status, body = await call(client, "GET", f"/records/{event_id}", token=hub)
            assert status == 200 and body["handling"]["code"] == "H2" and CANARY in str(body["payload"])
            status, page = await call(client, "GET", "/inbox", token=hub)
            assert status == 200 and page["events"][0]["handling"]["code"] == "H2"
            status, body = await call(client, "POST", f"/records/{event_id}/forward", {"to": ["VN"]}, hub)
            assert (status, body["code"]) == (422, "handling_restricted")
            status, body = await call(client, "POST", f"/cases/{CASE}/shred", {"reason": "asked by Sokha"},
                                      hub)
            assert (status, body["code"]) == (400, "malformed")
            status, body = await call(client, "POST", f"/cases/{CASE}/shred", {"reason": "court_order"}, hub)
            assert status == 200 and body["notice_status"] == "queued"
            status, body = await call(client, "GET", f"/records/{event_id}", token=hub)
            assert status == 410 and "payload" not in body and body["shredded"]["reason"] == "court_order"
            status, body = await call(client, "GET", "/records/nope", token=hub)
            assert (status, body["status"], body["code"]) == (404, "rejected", "not_found")
            status, body = await call(client, "POST", f"/events/{event_id}/permissions",
                                      {"forwarder": "VN.MOLISA", "to": ["LA"]}, hub)
            assert (status, body["code"]) == (404, "not_found")
    lines = {(e["event"], e.get("code")) for e in logs}
    assert lines >= {("forward", "handling_restricted"), ("shredded", None)}
    assert CANARY not in str(logs)


PROTECTION_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/records/{id}", None),
    ("POST", "/records/{id}/forward", {"to": ["VN"]}),
    ("POST", "/events/{id}/permissions", {"forwarder": "VN.MOLISA", "to": ["LA"]}),
    ("POST", "/cases/{case}/shred", {"reason": "court_order"}),
]


@pytest.mark.parametrize(("method", "route", "body"), PROTECTION_ROUTES,
                         ids=[r[1] for r in PROTECTION_ROUTES])
async def test_each_protection_route_needs_a_token_with_its_scope(
        world: World, tmp_path: Path, method: str, route: str, body: Any) -> None:
    """No token is 401 unauthenticated and a client without the route's scope 403 forbidden, and
    the record is untouched (still readable, its case not shredded)."""
    node, event_id = recipient_node(world, tmp_path)
    others = tuple(s for s in auth.SCOPES if s not in ROUTE_SCOPES[(method, route)])
    lacking, reader = add_client(node, "lacking", others), add_client(node, "reader", ("read",))
    path, before = route.format(id=event_id, case=CASE), queued(node)
    async with TestClient(TestServer(http_app(node))) as client:
        status, answer = await call(client, method, path, body)
        assert (status, answer["code"]) == (401, "unauthenticated")
        status, answer = await call(client, method, path, body, lacking)
        assert (status, answer["code"]) == (403, "forbidden")
        assert (await call(client, "GET", f"/records/{event_id}", token=reader))[0] == 200
    assert queued(node) == before


def test_the_protection_routes_need_read_submit_and_process() -> None:
    """Reading a record needs read; a forward and a permission send an event (submit); shredding
    acts on what the node stored, as marking it processed does (process)."""
    assert {(m, r): ROUTE_SCOPES[(m, r)] for m, r, _ in PROTECTION_ROUTES} == {
        ("GET", "/records/{id}"): {"read"},
        ("POST", "/records/{id}/forward"): {"submit"},
        ("POST", "/events/{id}/permissions"): {"submit"},
        ("POST", "/cases/{case}/shred"): {"process"},
    }


BAD_REQUESTS: list[tuple[str, str, str, bytes]] = [
    ("forward: not JSON", "POST", "/records/{id}/forward", b'{"to": '),
    ("forward: deeply nested", "POST", "/records/{id}/forward", b"[" * 100_000 + b"]" * 100_000),
    ("forward: a JSON array", "POST", "/records/{id}/forward", b"[]"),
    ("forward: no addressee", "POST", "/records/{id}/forward", b'{"to": []}'),
    ("forward: to a string", "POST", "/records/{id}/forward", b'{"to": "VN"}'),
    ("forward: an unknown field", "POST", "/records/{id}/forward", b'{"to": ["VN"], "payload": {}}'),
    ("forward: 33 addressees", "POST", "/records/{id}/forward", json.dumps({"to": ["VN"] * 33}).encode()),
    ("permission: no forwarder", "POST", "/events/{id}/permissions", b'{"to": ["LA"]}'),
    ("permission: forwarder not an id", "POST", "/events/{id}/permissions",
     b'{"forwarder": "somebody", "to": ["LA"]}'),
    ("permission: forwarder a number", "POST", "/events/{id}/permissions", b'{"forwarder": 7, "to": ["LA"]}'),
    ("shred: reason missing", "POST", "/cases/{case}/shred", b"{}"),
    ("shred: reason a list", "POST", "/cases/{case}/shred", b'{"reason": ["court_order"]}'),
    ("shred: case ref past its bound", "POST", "/cases/" + "c" * 129 + "/shred",
     b'{"reason": "court_order"}'),
]


@pytest.mark.parametrize(("method", "route", "raw"), [b[1:] for b in BAD_REQUESTS],
                         ids=[b[0] for b in BAD_REQUESTS])
async def test_bad_protection_requests_get_400_malformed_and_change_nothing(
        world: World, tmp_path: Path, method: str, route: str, raw: bytes) -> None:
    """Each bad body or path is 400 malformed as JSON from the guard; nothing is queued or shredded."""
    node, event_id = recipient_node(world, tmp_path)
    hub, before = add_client(node, "hub"), queued(node)
    async with TestClient(TestServer(http_app(node))) as client:
        response = await client.request(method, route.format(id=event_id, case=CASE), data=raw, headers={
            "Authorization": f"Bearer {hub}", "content-type": "application/json"})
        answer = await response.json()
        assert (response.status, answer["status"], answer["code"]) == (400, "rejected", "malformed")
        assert (await call(client, "GET", f"/records/{event_id}", token=hub))[0] == 200
    assert queued(node) == before


async def test_shredding_without_a_key_file_is_409_not_configured(world: World, tmp_path: Path) -> None:
    """A node without at-rest keys cannot shred: 409 not_configured, not a server error."""
    node, _ = recipient_node(world, tmp_path)
    node.vault = None
    async with TestClient(TestServer(http_app(node))) as client:
        status, answer = await call(client, "POST", f"/cases/{CASE}/shred", {"reason": "court_order"},
                                    add_client(node, "hub"))
    assert (status, answer["code"]) == (409, "not_configured")


async def test_a_permission_for_a_participant_that_never_received_the_event_is_403(
        world: World, tmp_path: Path) -> None:
    """The provider cannot permit a forward by someone it never sent the record to: 403
    handling_restricted, and nothing is queued."""
    provider = store.connect(tmp_path / "TH" / "node.sqlite")
    node = Node(Settings(home=tmp_path), world, world.identity("TH.MSDHS"), provider)
    doc = {"event_type": "return_plan.proposed", "case_ref": CASE, "to": ["KH"],
           "payload": to_json(example_payload("return_plan.proposed"))}
    sent = service.submit(world, node.me, provider, doc, NOW)
    async with TestClient(TestServer(http_app(node))) as client:
        status, answer = await call(client, "POST", f"/events/{sent.event_id}/permissions",
                                    {"forwarder": "VN.MOLISA", "to": ["LA"]}, add_client(node, "hub"))
    assert (status, answer["code"]) == (403, "handling_restricted")
    assert [row.event_id for row in store.queued(provider)] == [sent.event_id]
