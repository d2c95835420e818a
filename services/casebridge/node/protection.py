"""Protecting the people in a node's store: reads that say how a record may be used, shredding.

``read_record`` is what every read of a stored record goes through: the decrypted record with its
handling code (and the H3 conditions), or, once the case was shredded, its metadata only.
``shred_case`` destroys a case's keys and content and queues the metadata-only ``case.shredded``
notice to the secretariat (it reaches the audit trail through the router like every event).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from casebridge.core import vault as vault_core
from casebridge.core.keys import Identity
from casebridge.node import service, store, vault
from casebridge.node.vault import ShredResult, Vault
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World

SECRETARIAT = "REG.SECRETARIAT"
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
    return {**shown, "handling": handling_of(shown)}


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
