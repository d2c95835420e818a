"""Handling codes enforced (``core.handling``, ``route``'s defence in depth, ``node.protection``)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from casebridge.core import handling, sealing
from casebridge.core.directory import revoke
from casebridge.core.errors import Malformed
from casebridge.core.jsonform import to_json
from casebridge.core.model import CaseState, Header
from casebridge.core.routing import Deliver, Reject, route
from casebridge.node import protection, service, store, validate
from casebridge.node import vault as node_vault
from casebridge.runtime.world import World, bootstrap_network
from tests.unit.envelope_factories import example_payload

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PROVIDER, FORWARDER, THIRD = "TH.MSDHS", "KH.MOSVY", "VN.MOLISA"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One run-time network (keys generated, agreements signed) shared by this module's tests."""
    return bootstrap_network(tmp_path_factory.mktemp("network"), NOW - timedelta(hours=1))


def forward_header(**fields: Any) -> Header:
    base: dict[str, Any] = {"event_id": "e-fwd", "event_type": "return_plan.proposed", "sender": FORWARDER,
                            "sender_key_id": "", "created_at": NOW, "case_ref": "case-h2", "to": ("VN",),
                            "handling_code": "H2", "forward_of": "e-orig"}
    return Header(**{**base, **fields})


def permitted(world: World, header: Header, onward_to: tuple[str, ...] = ("VN",)) -> Header:
    permit = handling.grant(world.identity(PROVIDER), header.case_ref, "e-orig", FORWARDER, onward_to)
    return replace(header, permitted_by=permit.provider, permit_key_id=permit.key_id,
                   permit_signature=permit.signature)


@pytest.mark.parametrize(("change", "refused"), [
    ({"forward_of": None}, False),
    ({"handling_code": "H0"}, False),
    ({"handling_code": "H3"}, False),
    ({}, True),
])
def test_only_a_forward_of_an_h2_record_needs_a_permission(
        world: World, change: dict[str, Any], refused: bool) -> None:
    """A plain event, or a forward of an H0/H3 record, passes; a bare forward of an H2 record does not."""
    assert (handling.check_forward(forward_header(**change), world.directory) is not None) is refused


def test_the_provider_s_signature_permits_exactly_the_forward_it_names(world: World) -> None:
    """The permission covers its record, forwarder and addressees; other addressees are refused."""
    good = permitted(world, forward_header())
    assert handling.check_forward(good, world.directory) is None
    assert handling.check_forward(replace(good, to=("VN", "LA")), world.directory) is not None
    assert handling.check_forward(replace(good, forward_of="e-other"), world.directory) is not None
    assert handling.check_forward(replace(good, permit_signature=bytes(64)), world.directory) is not None


def test_a_forwarder_cannot_sign_its_own_permission(world: World) -> None:
    """A permission signed by the forwarder itself is refused, however valid its signature."""
    permit = handling.grant(world.identity(FORWARDER), "case-h2", "e-orig", FORWARDER, ["VN"])
    header = replace(forward_header(), permitted_by=FORWARDER, permit_key_id=permit.key_id,
                     permit_signature=permit.signature)
    assert "own forward" in str(handling.check_forward(header, world.directory))


def test_route_refuses_an_unpermitted_forward_even_after_a_remembered_delivery(world: World) -> None:
    """``route`` refuses a bare H2 forward with handling_restricted though its memo key was delivered."""
    allowed = route(permitted(world, forward_header()), world.policy, world.directory, CaseState(), NOW)
    assert isinstance(allowed, Deliver) and THIRD in allowed.grants
    refused = route(forward_header(), world.policy, world.directory, CaseState(), NOW)
    assert isinstance(refused, Reject) and refused.code == "handling_restricted"


# --- the nodes: provider TH.MSDHS, forwarder KH.MOSVY, third party VN.MOLISA ---------------------


def node(tmp_path: Path, participant: str) -> tuple[sqlite3.Connection, node_vault.Vault]:
    folder = tmp_path / participant
    return node_vault.prepare(store.connect(folder / "node.sqlite")), node_vault.open_vault(folder, bytes(32))


def deliver(world: World, sender: sqlite3.Connection, event_id: str, to: str,
            into: tuple[sqlite3.Connection, node_vault.Vault]) -> service.Received:
    row = store.outbox_row(sender, event_id)
    assert row is not None and row.envelope is not None, row
    return service.receive(world, world.identity(to), into[0], row.envelope, NOW, into[1])


def provided(world: World, tmp_path: Path, **more: Any) -> tuple[Any, Any, str]:
    """The provider's and the forwarder's stores, and the H2 record the forwarder received."""
    provider, forwarder = node(tmp_path, PROVIDER), node(tmp_path, FORWARDER)
    doc = {"event_type": "return_plan.proposed", "case_ref": "case-h2", "to": ["KH"],
           "payload": to_json(example_payload("return_plan.proposed")), **more}
    sent = service.submit(world, world.identity(PROVIDER), provider[0], doc, NOW)
    assert deliver(world, provider[0], sent.event_id, FORWARDER, forwarder).outcome == "stored"
    return provider, forwarder, sent.event_id


def forward(world: World, forwarder: Any, event_id: str) -> service.Submitted | None:
    return protection.request_forward(world, world.identity(FORWARDER), forwarder[0], forwarder[1],
                                      event_id, ["VN"], NOW)


def test_an_h2_forward_is_refused_then_permitted_by_the_provider(world: World, tmp_path: Path) -> None:
    """Refused with handling_restricted; after the provider's signed permission arrives, it is queued
    to the third party, who stores it knowing what it forwards."""
    provider, forwarder, event_id = provided(world, tmp_path)
    first = forward(world, forwarder, event_id)
    assert first is not None and (first.status, first.code) == ("rejected", "handling_restricted")
    grant = protection.grant_permission(world, world.identity(PROVIDER), provider[0], event_id,
                                        FORWARDER, ["VN"], NOW)
    assert grant is not None and grant.recipients == (FORWARDER,)
    assert deliver(world, provider[0], grant.event_id, FORWARDER, forwarder).outcome == "stored"
    second = forward(world, forwarder, event_id)
    assert second is not None and second.status == "queued" and THIRD in second.recipients
    third = node(tmp_path, THIRD)
    assert deliver(world, forwarder[0], second.event_id, THIRD, third).outcome == "stored"
    read = protection.read_record(third[1], third[0], second.event_id)
    assert read.body["forward_of"] == event_id and read.body["handling"]["code"] == "H2"


def test_a_permission_for_other_addressees_does_not_cover_the_forward(world: World, tmp_path: Path) -> None:
    """A permission to forward to LA leaves a forward to VN refused."""
    provider, forwarder, event_id = provided(world, tmp_path)
    grant = protection.grant_permission(world, world.identity(PROVIDER), provider[0], event_id,
                                        FORWARDER, ["LA"], NOW)
    assert grant is not None
    deliver(world, provider[0], grant.event_id, FORWARDER, forwarder)
    refused = forward(world, forwarder, event_id)
    assert refused is not None and refused.code == "handling_restricted"


def test_a_provider_permits_only_a_participant_it_sent_the_record_to(world: World, tmp_path: Path) -> None:
    """Granting a permission to a participant that never received the record is refused."""
    provider, _, event_id = provided(world, tmp_path)
    with pytest.raises(handling.HandlingRestricted):
        protection.grant_permission(world, world.identity(PROVIDER), provider[0], event_id, THIRD, ["LA"],
                                    NOW)


def test_an_h3_record_carries_its_conditions_to_every_read_and_to_its_forward(
        world: World, tmp_path: Path) -> None:
    """An H3 record's conditions come back with every read and travel with its forward."""
    _, forwarder, event_id = provided(world, tmp_path, handling_code="H3",
                                      handling_conditions="not to be shared with police")
    read = protection.read_record(forwarder[1], forwarder[0], event_id)
    assert read.body["handling"] == {"code": "H3", "meaning": "see the provider's conditions",
                                     "conditions": "not to be shared with police"}
    sent = forward(world, forwarder, event_id)
    assert sent is not None and sent.status == "queued"
    row = store.outbox_row(forwarder[0], sent.event_id)
    assert row is not None and row.envelope is not None
    header = sealing.verify(row.envelope, world.directory, NOW, world.max_age, schemas=world.schemas).header
    assert (header.handling_conditions, header.forward_of) == ("not to be shared with police", event_id)


def test_a_permission_signed_with_a_revoked_key_is_refused(world: World) -> None:
    """Once the provider's signing key is revoked, a permission made with it no longer counts."""
    good = permitted(world, forward_header())
    revoked = revoke(world.directory, good.permit_key_id or "", NOW - timedelta(minutes=1))
    assert "no current signing key" in str(handling.check_forward(good, revoked))


FORWARD_DOC: dict[str, Any] = {
    "event_type": "return_plan.proposed", "case_ref": "case-h2", "to": ["VN"], "handling_code": "H2",
    "forward_of": "7d1f0a52-3f5e-4a0b-9b8e-2f7f3c1d9e01", "permitted_by": PROVIDER,
    "permit_key_id": "0123456789abcdef", "permit_signature": bytes(64),
}


@pytest.mark.parametrize(("change", "refused"), [
    ({}, None),
    ({"handling_conditions": None}, None),
    ({"permit_signature": bytes(63)}, "permit_signature"),
    ({"permit_signature": "AAAA" * 22}, "permit_signature"),
    ({"permit_key_id": None}, "come together"),
    ({"forward_of": None}, "come together"),
    ({"permitted_by": "somebody"}, "permitted_by"),
    ({"permit_key_id": "k" * 65}, "permit_key_id"),
    ({"permit_key_id": ""}, "permit_key_id"),
])
def test_a_forward_document_carries_the_provider_s_permission_whole_and_as_bytes(
        change: dict[str, Any], refused: str | None) -> None:
    """The node's own forward document (``request_forward``) passes validation; a permission that
    is partial, off a forward, or whose signature is not 64 bytes is ``Malformed``."""
    doc = {**FORWARD_DOC, **change}
    if refused is None:
        assert validate.event_document(doc) is doc
    else:
        with pytest.raises(Malformed, match=refused):
            validate.event_document(doc)
