"""Consent withdrawal end to end (``core.consent``, ``node.consent``): notices and restricted records."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from casebridge.core import consent
from casebridge.core.jsonform import to_json
from casebridge.core.model import CaseState, Header
from casebridge.node import consent as node_consent
from casebridge.node import protection, service, store
from casebridge.node import vault as node_vault
from casebridge.runtime.world import World, bootstrap_network
from tests.unit.envelope_factories import example_payload

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PROVIDER, RECIPIENT = "TH.MSDHS", "KH.MOSVY"
CASE = "case-consent"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One run-time network (keys generated, agreements signed) shared by this module's tests."""
    return bootstrap_network(tmp_path_factory.mktemp("network"), NOW - timedelta(hours=1))


def origin_header(**fields: Any) -> Header:
    return Header(**{"event_id": "e1", "event_type": "origin.notified", "sender": PROVIDER,
                     "sender_key_id": "", "created_at": NOW, "case_ref": CASE, "to": ("KH",), **fields})


def test_a_record_gated_by_a_scope_was_received_under_it(world: World) -> None:
    """An origin notification was received under origin_notification; it no longer routes without it."""
    header = origin_header()
    gone = consent.received_under(header, [RECIPIENT], world.policy, world.directory, CaseState(), NOW)
    kept = consent.received_under(header, [RECIPIENT], world.policy, world.directory,
                                  CaseState(frozenset({"origin_notification"})), NOW)
    plan = consent.received_under(origin_header(event_type="return_plan.proposed"), [RECIPIENT],
                                  world.policy, world.directory, CaseState(), NOW)
    assert (gone, kept, plan) == ({RECIPIENT}, frozenset(), frozenset())


def node(tmp_path: Path, participant: str) -> tuple[sqlite3.Connection, node_vault.Vault]:
    folder = tmp_path / participant
    return node_vault.prepare(store.connect(folder / "node.sqlite")), node_vault.open_vault(folder, bytes(32))


def send(world: World, sender: sqlite3.Connection, doc: dict[str, Any],
         into: tuple[sqlite3.Connection, node_vault.Vault] | None = None) -> str:
    """Submit as the provider and, if ``into`` is given, deliver it to the recipient's node."""
    sent = service.submit(world, world.identity(PROVIDER), sender, {"case_ref": CASE, **doc}, NOW)
    assert sent.status == "queued", sent
    if into is not None:
        row = store.outbox_row(sender, sent.event_id)
        assert row is not None and row.envelope is not None
        got = service.receive(world, world.identity(RECIPIENT), into[0], row.envelope, NOW, into[1])
        assert got.outcome == "stored", got
    return sent.event_id


def event(event_type: str) -> dict[str, Any]:
    return {"event_type": event_type, "to": ["KH"], "payload": to_json(example_payload(event_type))}


def notices(conn: sqlite3.Connection) -> list[store.OutboxRow]:
    return [r for r in store.queued(conn) if r.event_type == consent.NOTICE]


def test_a_withdrawal_restricts_what_was_received_under_the_scope_and_nothing_else(
        world: World, tmp_path: Path) -> None:
    """The provider notifies KH.MOSVY of its origin notification only; KH's node then shows that
    record restricted, refuses to forward it, and forgets the scope (even when it was the last)."""
    provider, recipient = node(tmp_path, PROVIDER), node(tmp_path, RECIPIENT)
    send(world, provider[0], {"event_type": "consent.recorded", "to": ["TH"],
                              "consent_scopes": ["origin_notification"]})
    notified = send(world, provider[0], event("origin.notified"), recipient)
    plan = send(world, provider[0], event("return_plan.proposed"), recipient)
    send(world, provider[0], {"event_type": "consent.withdrawn", "to": ["TH"],
                              "consent_scopes": ["origin_notification"]})
    (notice,) = notices(provider[0])
    assert notice.recipients == (RECIPIENT,)
    got = service.receive(world, world.identity(RECIPIENT), recipient[0], notice.envelope or b"", NOW,
                          recipient[1])
    assert got.outcome == "stored"
    read = protection.read_record(recipient[1], recipient[0], notified)
    assert read.body["restricted"]["scopes"] == ["origin_notification"]
    assert read.body["handling"]["code"] == "H2"
    assert "restricted" not in protection.read_record(recipient[1], recipient[0], plan).body
    refused = protection.request_forward(world, world.identity(RECIPIENT), recipient[0], recipient[1],
                                         notified, ["VN"], NOW)
    assert refused is not None and refused.code == "handling_restricted"
    assert service.case_state_of(recipient[0], CASE).consent == frozenset()


def test_a_withdrawal_with_nothing_sent_under_the_scope_notifies_nobody(world: World, tmp_path: Path) -> None:
    """Records that no scope gated (a return plan) give no notice."""
    provider, recipient = node(tmp_path, PROVIDER), node(tmp_path, RECIPIENT)
    send(world, provider[0], event("return_plan.proposed"), recipient)
    send(world, provider[0], {"event_type": "consent.withdrawn", "to": ["TH"],
                              "consent_scopes": ["origin_notification"]})
    assert notices(provider[0]) == []


def test_a_notice_restricts_only_records_its_sender_provided(world: World, tmp_path: Path) -> None:
    """A notice naming another provider's record, or another case's, marks nothing."""
    provider, recipient = node(tmp_path, PROVIDER), node(tmp_path, RECIPIENT)
    plan = send(world, provider[0], event("return_plan.proposed"), recipient)
    other = Header("n1", consent.NOTICE, "KH.CWCC", "", NOW, CASE, (RECIPIENT,))
    payload = {"operational": {"withdrawn_scopes": ["ngo_sharing"], "record_ids": [plan]}}
    assert node_consent.restrict(recipient[0], other, payload, NOW) == 0
    elsewhere = Header("n2", consent.NOTICE, PROVIDER, "", NOW, "case-other", (RECIPIENT,))
    assert node_consent.restrict(recipient[0], elsewhere, payload, NOW) == 0


def test_a_withdrawal_through_the_group_commit_queues_its_notices_too(world: World, tmp_path: Path) -> None:
    """POST /events commits through ``submit_many``: a consent.withdrawn there notifies as ``submit``
    does."""
    provider, recipient = node(tmp_path, PROVIDER), node(tmp_path, RECIPIENT)
    send(world, provider[0], {"event_type": "consent.recorded", "to": ["TH"],
                              "consent_scopes": ["origin_notification"]})
    send(world, provider[0], event("origin.notified"), recipient)
    withdrawal = {"case_ref": CASE, "event_type": "consent.withdrawn", "to": ["TH"],
                  "consent_scopes": ["origin_notification"]}
    [result] = service.submit_many(world, world.identity(PROVIDER), provider[0], [withdrawal], NOW)
    assert isinstance(result, service.Submitted) and result.status == "queued"
    assert [n.recipients for n in notices(provider[0])] == [(RECIPIENT,)]
