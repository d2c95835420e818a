"""Protecting the people in a node's store: reads that say how a record may be used, shredding.

``read_record`` is what every read of a stored record goes through: the decrypted record with its
handling code (and the H3 conditions), or, once the case was shredded, its metadata only.
``shred_case`` destroys a case's keys and content and queues the metadata-only ``case.shredded``
notice to the secretariat (it reaches the audit trail through the router like every event).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from casebridge.core import handling
from casebridge.core import vault as vault_core
from casebridge.core.keys import Identity
from casebridge.node import consent, service, store, vault
from casebridge.node.vault import ShredResult, Vault
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World

SECRETARIAT = "REG.SECRETARIAT"
PERMISSION_EVENT = "handling.permission_granted"
HANDLING_MEANING = {
    "H0": "free to use within the purpose of the agreement",
    "H1": "not to be used as evidence without the provider's permission",
    "H2": "no onward sharing without the provider's permission",
    "H3": "see the provider's conditions",
}


@dataclass(frozen=True)
class Read:
    """The outcome of reading one stored record: ``found``, ``shredded`` or ``missing``."""

    outcome: str
    body: dict[str, Any]


def open_node_vault(settings: Settings, conn: sqlite3.Connection, folder: Path) -> Vault:
    """The node's key file beside its store, under the configured (or generated) master key."""
    vault.prepare(conn)
    return vault.open_vault(folder, vault.master_key(settings.master_key, folder))


def handling_of(record: dict[str, Any]) -> dict[str, Any]:
    """The handling code of a record, what it means, and its conditions (H3)."""
    code = str(record.get("handling_code") or "H2")
    found: dict[str, Any] = {"code": code, "meaning": HANDLING_MEANING.get(code, "")}
    if record.get("handling_conditions"):
        found["conditions"] = record["handling_conditions"]
    return found


def readable(v: Vault | None, conn: sqlite3.Connection, record: dict[str, Any]) -> dict[str, Any]:
    """A stored record as every API read returns it: decrypted, with its handling."""
    shown = vault.reveal(v, conn, record) if v is not None else dict(record)
    restricted = consent.restriction(conn, str(shown["event_id"]))
    return {**shown, "handling": handling_of(shown), **({"restricted": restricted} if restricted else {})}


def stored_records(v: Vault | None, conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every inbox record, as reads show it (for the statistics export)."""
    records, after = [], ""
    while page := store.inbox_page(conn, after, 500):
        records += [readable(v, conn, r) for r in page]
        after = f"{page[-1]['received_at']}|{page[-1]['event_id']}"
    return records


def read_record(v: Vault | None, conn: sqlite3.Connection, event_id: str) -> Read:
    record = store.inbox_record(conn, event_id)
    if record is None:
        return Read("missing", {"code": "not_found", "event_id": event_id})
    shown = readable(v, conn, record)
    return Read("shredded" if "shredded" in shown else "found", shown)


def shred_case(
    world: World, me: Identity, conn: sqlite3.Connection, v: Vault, case_ref: str, reason: str,
    now: datetime,
) -> tuple[ShredResult, service.Submitted]:
    """Shred a case for good and queue its metadata-only ``case.shredded`` to the secretariat."""
    result = vault.shred(v, conn, case_ref, reason, now)
    notice = {
        "event_type": "case.shredded",
        "case_ref": case_ref,
        "to": [SECRETARIAT],
        "handling_code": "H0",
        "payload": {"operational": {"shredded_at": now.isoformat(), "reason": reason,
                                    "records": result.records, "keys": result.keys}},
    }
    return result, service.submit(world, me, conn, notice, now)


def apply_retention(
    v: Vault, conn: sqlite3.Connection, classes: tuple[vault_core.RetentionClass, ...], now: datetime
) -> dict[str, list[str]]:
    """Destroy the keys of every category whose retention class ran out since its case closed;
    case ref -> the categories destroyed now."""
    done: dict[str, list[str]] = {}
    for case_ref, closed_at, agreement in store_closed_cases(conn):
        due = vault_core.expired(classes, agreement, closed_at, now)
        if due and vault.expire(v, case_ref, due):
            done[case_ref] = sorted(due)
    return done


def store_closed_cases(conn: sqlite3.Connection) -> list[tuple[str, datetime, str | None]]:
    """(case ref, when the case.closed was created, its agreement) of every closed case."""
    rows = conn.execute(
        "SELECT case_ref, json_extract(record, '$.created_at'), json_extract(record, '$.agreement_id') "
        "FROM inbox WHERE event_type = 'case.closed'").fetchall()
    return [(case_ref, datetime.fromisoformat(at), agreement) for case_ref, at, agreement in rows]


def grant_permission(
    world: World, me: Identity, conn: sqlite3.Connection, event_id: str, forwarder: str,
    onward_to: list[str], now: datetime,
) -> service.Submitted | None:
    """As the provider of ``event_id``: let ``forwarder`` (a recipient of it) pass it on to exactly
    ``onward_to``; queues the signed ``handling.permission_granted`` to it. None: not our event."""
    row = store.outbox_row(conn, event_id)
    if row is None or row.envelope is None:
        return None
    if forwarder not in row.recipients:
        raise handling.HandlingRestricted(f"{forwarder} did not receive {event_id}: nothing to permit")
    permit = handling.grant(me, row.case_ref, event_id, forwarder, onward_to)
    operational = {"for_event_id": event_id, "forwarder": forwarder, "onward_to": sorted(onward_to),
                   "key_id": permit.key_id, "signature": base64.b64encode(permit.signature).decode(),
                   "granted_at": now.isoformat()}
    doc = {"event_type": PERMISSION_EVENT, "case_ref": row.case_ref, "to": [forwarder],
           "correlation_id": event_id, "handling_code": "H0", "payload": {"operational": operational}}
    return service.submit(world, me, conn, doc, now)


def permission_for(
    v: Vault | None, conn: sqlite3.Connection, record: dict[str, Any], forwarder: str, to: list[str]
) -> handling.Permission | None:
    """The provider's permission, received in a ``handling.permission_granted``, to forward
    ``record`` to exactly ``to``; None if it never came."""
    rows = conn.execute("SELECT record FROM inbox WHERE event_type = ? AND correlation_id = ? AND sender = ?",
                        (PERMISSION_EVENT, record["event_id"], record["sender"])).fetchall()
    for (text,) in rows:
        granted = readable(v, conn, json.loads(text)).get("payload", {}).get("operational") or {}
        if granted.get("forwarder") == forwarder and sorted(granted.get("onward_to", [])) == sorted(to):
            signature = base64.b64decode(granted["signature"])
            return handling.Permission(record["sender"], granted["key_id"], signature)
    return None


def request_forward(
    world: World, me: Identity, conn: sqlite3.Connection, v: Vault | None, event_id: str,
    to: list[str], now: datetime,
) -> service.Submitted | None:
    """Pass a received record on to ``to``: refused (``handling_restricted``, kept in the outbox)
    when its handling code needs the provider's permission and none covers this forward, or when
    it was shredded or restricted. None: no such record."""
    read = read_record(v, conn, event_id)
    if read.outcome == "missing":
        return None
    record = read.body
    permit = permission_for(v, conn, record, me.participant, to)
    why = forward_refusal(read, permit)
    if why is not None:
        refused = str(uuid.uuid4())
        with store.transaction(conn):
            store.record_refusal(conn, refused, record["case_ref"], record["event_type"],
                                 "handling_restricted", now)
        return service.Submitted(refused, "rejected", "handling_restricted", why)
    doc = {"event_type": record["event_type"], "case_ref": record["case_ref"], "to": to,
           "handling_code": record["handling"]["code"],
           "handling_conditions": record.get("handling_conditions"), "forward_of": event_id,
           "payload": record.get("payload") or {}}
    if permit is not None:
        doc |= {"permitted_by": permit.provider, "permit_key_id": permit.key_id,
                "permit_signature": permit.signature}
    return service.submit(world, me, conn, doc, now)


def forward_refusal(read: Read, permit: handling.Permission | None) -> str | None:
    record = read.body
    if read.outcome == "shredded":
        return "the record's case was shredded"
    if record.get("restricted"):
        return "the record is restricted (consent withdrawn): it is never forwarded"
    code = record["handling"]["code"]
    if code in handling.NEEDS_PERMISSION and permit is None:
        return f"{code}: no onward sharing without the provider's permission ({record['sender']})"
    return None
