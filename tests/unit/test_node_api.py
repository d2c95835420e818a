"""The node's HTTP API (``casebridge.node.app``) over a real World and SQLite store, no broker:
client authentication and scopes, the request log, and a 4xx with a stable code for bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from casebridge.core import limits
from casebridge.core.jsonform import to_json
from casebridge.node import app, auth, store
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World, bootstrap_network
from tests.unit.envelope_factories import example_payload

NOW = datetime.now(UTC)
SENDER = "TH.MSDHS"
Client = TestClient[Any, Any]

# http_app keys the node by a plain string; aiohttp's advice about AppKey is not this test's subject
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One run-time network (keys generated, agreements signed) shared by this module's tests."""
    return bootstrap_network(tmp_path_factory.mktemp("network"), NOW - timedelta(hours=1))


def add_client(home: Path, client_id: str, scopes: tuple[str, ...] = auth.SCOPES) -> str:
    """A client of the sender's node with these scopes; its token."""
    path = auth.clients_file(home, SENDER)
    token = auth.new_token()
    auth.save_clients(path, auth.add_client(auth.load_clients(path), client_id, scopes, token, NOW))
    return token


@pytest.fixture
async def api(world: World, tmp_path: Path) -> AsyncIterator[tuple[Client, Path]]:
    settings = Settings(home=tmp_path)
    node = app.Node(settings, world, world.identity(SENDER), app.open_store(tmp_path, SENDER))
    async with TestClient(TestServer(app.http_app(node))) as client:
        yield client, tmp_path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def event(**more: Any) -> dict[str, Any]:
    return {"event_type": "return_plan.proposed", "case_ref": "case-api", "to": ["KH"],
            "payload": to_json(example_payload("return_plan.proposed")), **more}


async def test_health_needs_no_credential(api: tuple[Client, Path]) -> None:
    """GET /health answers without a token (liveness probes carry none)."""
    client, _ = api
    assert (await client.get("/health")).status == 200


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer cbt_wrong"}, {"Authorization": "Basic eDp5"}],
    ids=["none", "unknown token", "not bearer"],
)
async def test_missing_or_bad_credentials_get_401_unauthenticated(
    api: tuple[Client, Path], headers: dict[str, str]
) -> None:
    """Without a current client's bearer token every operation but /health is 401 unauthenticated."""
    client, home = api
    add_client(home, "hub")
    for method, path in (("POST", "/events"), ("GET", "/inbox"), ("GET", f"/events/{'0' * 36}"),
                         ("POST", "/inbox/x/processed")):
        response = await client.request(method, path, headers=headers, json=event())
        assert response.status == 401, (method, path)
        assert (await response.json())["code"] == "unauthenticated"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_revoked_token_is_refused_from_the_next_request_on(api: tuple[Client, Path]) -> None:
    """``revoke`` rewrites the clients file and the running node refuses that token at once."""
    client, home = api
    token = add_client(home, "hub")
    assert (await client.get("/inbox", headers=bearer(token))).status == 200
    path = auth.clients_file(home, SENDER)
    auth.save_clients(path, auth.revoke_client(auth.load_clients(path), "hub", NOW))
    assert (await client.get("/inbox", headers=bearer(token))).status == 401


@pytest.mark.parametrize(
    ("scopes", "method", "path"),
    [(("read",), "POST", "/events"), (("submit",), "GET", "/inbox"),
     (("read", "submit"), "POST", "/inbox/x/processed")],
)
async def test_a_missing_scope_gets_403_forbidden(
    api: tuple[Client, Path], scopes: tuple[str, ...], method: str, path: str
) -> None:
    """A known client without the operation's scope is 403 forbidden, and nothing is queued."""
    client, home = api
    token = add_client(home, "tool", scopes)
    response = await client.request(method, path, headers=bearer(token), json=event())
    assert (response.status, (await response.json())["code"]) == (403, "forbidden")


async def test_every_request_is_logged_with_the_client_id_never_the_token(api: tuple[Client, Path]) -> None:
    """One ``http_request`` line per request names the client, route and status; no line holds the token."""
    client, home = api
    token = add_client(home, "hub")
    with capture_logs() as logs:
        await client.post("/events", headers=bearer(token), json=event())
        await client.get("/inbox")
    lines = [entry for entry in logs if entry["event"] == "http_request"]
    assert [(e["client"], e["route"], e["status"]) for e in lines] == [
        ("hub", "/events", 202), (None, "/inbox", 401)]
    assert token not in json.dumps(logs, default=str)


async def test_clients_file_is_private_and_holds_no_token(api: tuple[Client, Path]) -> None:
    """The clients file is 0600 and keeps only the token's hash."""
    _, home = api
    token = add_client(home, "hub")
    path = auth.clients_file(home, SENDER)
    assert path.stat().st_mode & 0o777 == 0o600
    assert token not in path.read_text() and auth.token_hash(token) in path.read_text()


FORWARDED = "7d1f0a52-3f5e-4a0b-9b8e-2f7f3c1d9e02"
BAD_BODIES: list[tuple[str, bytes, int, str]] = [
    ("malformed JSON", b'{"event_type": ', 400, "malformed"),
    ("not UTF-8", b"\xff\xfe{}", 400, "malformed"),
    ("a JSON array", b"[]", 400, "malformed"),
    ("a JSON string", b'"event"', 400, "malformed"),
    ("null", b"null", 400, "malformed"),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000, 400, "malformed"),
    ("consent scope an object", json.dumps(event(consent_scopes=[{"a": 1}])).encode(), 400, "malformed"),
    ("unknown event type", json.dumps(event(event_type="no.such")).encode(), 400, "malformed"),
    ("unknown top-level field", json.dumps(event(priority=1)).encode(), 400, "malformed"),
    ("event_id not a UUID", json.dumps(event(event_id="x")).encode(), 400, "malformed"),
    ("case_ref of 900,000 characters", json.dumps(event(case_ref="c" * 900_000)).encode(), 400, "malformed"),
    ("too many recipients", json.dumps(event(to=["KH"] * 33)).encode(), 400, "malformed"),
    ("correlation_id not a string", json.dumps(event(correlation_id=[1])).encode(), 400, "malformed"),
    ("witness_hold not a boolean", json.dumps(event(witness_hold="yes")).encode(), 400, "malformed"),
    ("handling_conditions a list", json.dumps(event(handling_conditions=["x"])).encode(), 400, "malformed"),
    ("handling_conditions of 501 characters", json.dumps(event(handling_code="H3",
                                                               handling_conditions="c" * 501)).encode(),
     400, "malformed"),
    ("handling_conditions with a control character", json.dumps(event(handling_conditions="a\x00b")).encode(),
     400, "malformed"),
    ("forward_of not a UUID", json.dumps(event(forward_of="e-orig")).encode(), 400, "malformed"),
    ("permitted_by alone", json.dumps(event(forward_of=FORWARDED, permitted_by="TH.MSDHS")).encode(), 400,
     "malformed"),
    ("a permission as JSON", json.dumps(event(forward_of=FORWARDED, permitted_by="TH.MSDHS",
                                              permit_key_id="0123456789abcdef",
                                              permit_signature="QUFB" * 22)).encode(), 400, "malformed"),
    ("body over the size limit", b" " * (limits.MAX_BODY_BYTES + 1), 413, "oversized"),
    ("unknown payload field", json.dumps(event(payload={"operational": {"x": 1}})).encode(), 422,
     "schema_invalid"),
    ("country with no agreement", json.dumps(event(to=["US"])).encode(), 422, "no_agreement"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
async def test_bad_events_get_a_4xx_with_a_stable_code(
    api: tuple[Client, Path], body: bytes, status: int, code: str
) -> None:
    """Each bad POST /events gets its 4xx and code as JSON, and the node keeps answering."""
    client, home = api
    token = add_client(home, "hub")
    response = await client.post("/events", data=body, headers={**bearer(token),
                                                                "content-type": "application/json"})
    assert (response.status, (await response.json())["code"]) == (status, code)
    assert (await client.get("/health")).status == 200


async def test_an_h3_event_with_its_conditions_is_queued(api: tuple[Client, Path]) -> None:
    """POST /events takes an H3 event's conditions (bounded, printable) and queues it."""
    client, home = api
    token = add_client(home, "hub", ("submit",))
    doc = event(handling_code="H3", handling_conditions="not to be shared with police")
    response = await client.post("/events", json=doc, headers=bearer(token))
    assert (response.status, (await response.json())["status"]) == (202, "queued")


async def test_a_reused_event_id_gets_409_replay(api: tuple[Client, Path]) -> None:
    """A second event with the id of one already queued is 409 replay, not a server error."""
    client, home = api
    token = add_client(home, "hub")
    doc = event(event_id="7d1f0a52-3f5e-4a0b-9b8e-2f7f3c1d9e01")
    assert (await client.post("/events", json=doc, headers=bearer(token))).status == 202
    again = await client.post("/events", json=doc, headers=bearer(token))
    assert (again.status, (await again.json())["code"]) == (409, "replay")


async def test_a_sealed_envelope_over_the_record_limit_is_refused_before_queueing(
    api: tuple[Client, Path]
) -> None:
    """An event whose envelope would exceed the Kafka record limit is 422 oversized, kept as rejected."""
    client, home = api
    token = add_client(home, "hub")
    doc = event()
    doc["payload"]["operational"]["checkpoint"] = "x" * limits.MAX_RECORD_BYTES
    response = await client.post("/events", json=doc, headers=bearer(token))
    body = await response.json()
    assert (response.status, body["code"]) == (422, "oversized")
    conn = store.connect(app.node_db(home, SENDER))
    assert store.queued(conn) == []
    assert store.outbox_row(conn, body["event_id"]).status == "rejected"  # type: ignore[union-attr]


async def test_a_category_not_granted_to_a_recipient_is_reported_withheld(api: tuple[Client, Path]) -> None:
    """A data category the agreement does not let a recipient see is named in ``withheld``."""
    client, home = api
    token = add_client(home, "hub")
    doc = {"event_type": "nationality_verification.responded", "case_ref": "case-api", "to": ["KH"],
           "payload": to_json(example_payload("nationality_verification.responded"))}
    response = await client.post("/events", json=doc, headers=bearer(token))
    assert response.status == 202
    assert (await response.json())["withheld"] == {"KH.MOSVY": ["legal"]}


@pytest.mark.parametrize("limit", ["abc", "1.5", "-1", "0", "501", "9" * 5000, ""])
async def test_inbox_limit_outside_1_to_500_gets_400_malformed(api: tuple[Client, Path], limit: str) -> None:
    """?limit= must be an integer from 1 to 500: anything else is 400 malformed (never the whole inbox)."""
    client, home = api
    token = add_client(home, "hub")
    response = await client.get("/inbox", params={"limit": limit}, headers=bearer(token))
    assert (response.status, (await response.json())["code"]) == (400, "malformed")


@pytest.mark.parametrize("after", ["9" * 30, "9223372036854775808", "\u00b2", "\u0663"])
async def test_inbox_cursor_that_is_no_arrival_number_gets_400_malformed(
    api: tuple[Client, Path], after: str
) -> None:
    """?after= in digits past SQLite's largest rowid, or in digits other than ASCII, is 400 malformed
    (never a server error)."""
    client, home = api
    token = add_client(home, "hub")
    response = await client.get("/inbox", params={"after": after}, headers=bearer(token))
    assert (response.status, (await response.json())["code"]) == (400, "malformed")


async def test_inbox_pages_with_a_valid_limit(api: tuple[Client, Path]) -> None:
    """A reader client gets an empty first page with no cursor from an empty inbox."""
    client, home = api
    token = add_client(home, "reader", ("read",))
    response = await client.get("/inbox", params={"limit": "500", "after": "x|y"}, headers=bearer(token))
    assert (response.status, await response.json()) == (200, {"events": [], "next": None})


async def test_unknown_event_status_is_404_with_a_code(api: tuple[Client, Path]) -> None:
    """GET /events/{id} of an id this node never saw is 404 not_found as JSON."""
    client, home = api
    token = add_client(home, "hub", ("read",))
    response = await client.get("/events/not-a-uuid", headers=bearer(token))
    assert (response.status, (await response.json())["code"]) == (404, "not_found")
