"""Consent withdrawal at a node: tell whoever received records under the scope; restrict them.

Sending side: once a ``consent.withdrawn`` is queued, ``withdrawal_notices`` makes one
``consent.withdrawal_notified`` per participant that received records of the case under a
withdrawn scope (``core.consent.received_under`` over this node's outbox), naming the records.
Receiving side: ``restrict`` marks the named records of that provider restricted (``GET`` shows
it; a forward is refused) and drops the scopes from the node's own view of the case.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from casebridge.core import consent
from casebridge.core.keys import Identity
from casebridge.core.model import CaseState, Header
from casebridge.core.routing import RECEIPTS
from casebridge.node import store
from casebridge.runtime.world import World

NOTICE = consent.NOTICE
NOT_RESTRICTABLE = RECEIPTS | {consent.NOTICE, "consent.recorded", "consent.withdrawn", "case.shredded"}


def withdrawal_notices(
    world: World, me: Identity, conn: sqlite3.Connection, case_ref: str, scopes: list[str],
    after: CaseState, now: datetime,
) -> list[dict[str, Any]]:
    """The notices to queue after a withdrawal of ``scopes`` (``after``: the case state now)."""
    affected: dict[str, list[str]] = {}
    rows = conn.execute("SELECT event_id, event_type, recipients, envelope FROM outbox WHERE case_ref = ? "
                        "AND envelope IS NOT NULL AND status != 'rejected' ORDER BY sequence",
                        (case_ref,)).fetchall()
    for event_id, event_type, recipients, envelope in rows:
        if event_type in NOT_RESTRICTABLE:
            continue
        header = consent.own_header(world.schemas, bytes(envelope))
        for pid in consent.received_under(header, json.loads(recipients), world.policy,
                                          world.directory, after, now):
            affected.setdefault(pid, []).append(event_id)
    return [{"event_type": consent.NOTICE, "case_ref": case_ref, "to": [pid], "handling_code": "H0",
             "payload": {"operational": {"withdrawn_scopes": sorted(scopes), "record_ids": ids,
                                         "withdrawn_at": now.isoformat()}}}
            for pid, ids in sorted(affected.items())]


def restrict(conn: sqlite3.Connection, header: Header, payload: Mapping[str, Any], now: datetime) -> int:
    """Mark the records a provider's notice names restricted; how many of ours it named."""
    notice = payload.get("operational") or {}
    scopes = sorted(notice.get("withdrawn_scopes") or [])
    marked = 0
    for event_id in notice.get("record_ids") or []:
        found = conn.execute("SELECT 1 FROM inbox WHERE event_id = ? AND sender = ? AND case_ref = ?",
                             (event_id, header.sender, header.case_ref)).fetchone()
        if found:  # a provider restricts only what it sent us, in that case
            conn.execute("INSERT OR REPLACE INTO restricted VALUES (?, ?, ?, ?, ?)",
                         (event_id, header.case_ref, json.dumps(scopes), header.event_id, now.isoformat()))
            marked += 1
    saved = store.load_case_state(conn, header.case_ref)
    left = sorted(set(saved.get("consent", ())) - set(scopes))
    store.save_case_state(conn, header.case_ref, {**saved, "consent": left,
                                                  "witness_hold": bool(saved.get("witness_hold"))})
    return marked


def restriction(conn: sqlite3.Connection, event_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT scopes, notice_event_id, at FROM restricted WHERE event_id = ?",
                       (event_id,)).fetchone()
    if row is None:
        return None
    return {"reason": "consent_withdrawn", "scopes": json.loads(row[0]), "notice_event_id": row[1],
            "at": row[2], "use": "read with its handling conditions only; never forwarded"}
