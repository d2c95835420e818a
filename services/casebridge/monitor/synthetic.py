"""Synthetic ``cb.audit`` records: for tests and for previewing the page without a network.

Records have the fields of ``casebridge.audit.AuditRecord`` exactly (they encode strictly), keep
each sender's chain (sequence from 1, ``prev_hash`` = the previous envelope hash), and carry only
made-up ids and pseudonymous case references. ``Writer.records`` is the whole log in writing order;
``Writer.audits`` the same records by the audit topic the secretariat reads them on: ``cb.audit``
for the single cluster, ``<country>.cb.audit`` (mirrored) for a federation's routers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from casebridge.core import topics

AGREEMENT = "MOU-KH-TH"


@dataclass
class Writer:
    """Appends audit records the way the router and the tracker would write them."""

    start: datetime
    records: list[dict[str, Any]] = field(default_factory=list)
    heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    audits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def position(self, sender: str) -> tuple[str, int]:
        return topics.outbox(sender), self.next_offset(topics.outbox(sender))

    def next_offset(self, topic: str) -> int:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        return offset

    def add(self, record: dict[str, Any], audit_topic: str = topics.AUDIT) -> dict[str, Any]:
        self.records.append(record)
        self.audits.setdefault(audit_topic, []).append(record)
        return record

    def partitions(self) -> list[list[dict[str, Any]]]:
        """The records grouped by audit topic (sorted by name), as the monitor hands them on."""
        return [self.audits[name] for name in sorted(self.audits)]

    def event(self, sender: str, event_type: str, recipients: tuple[str, ...], at_s: float,
              case_ref: str = "CASE-0001", correlation_id: str | None = None, code: str | None = None,
              agreement_id: str | None = AGREEMENT) -> dict[str, Any]:
        """A routed event: ``delivered``, or ``quarantined`` when ``code`` is given."""
        record = self.envelope(sender, event_type, recipients, at_s, case_ref, correlation_id, agreement_id)
        if code:
            record |= {"outcome": "quarantined", "code": code, "envelope_hash": None, "recipients": []}
        return self.add(record)

    def envelope(self, sender: str, event_type: str, recipients: tuple[str, ...], at_s: float,
                 case_ref: str, correlation_id: str | None, agreement_id: str | None) -> dict[str, Any]:
        """The ``delivered`` record of the sender's next envelope (the next link of its chain)."""
        sequence, prev = self.heads.get(sender, (0, b""))
        event_id = f"ev-{sender}-{sequence + 1}"
        digest = hashlib.sha256(f"{event_id}|{prev.hex()}".encode()).digest()
        self.heads[sender] = (sequence + 1, digest)
        topic, offset = self.position(sender)
        at = self.start + timedelta(seconds=at_s)
        return base(at, "delivered", topic, offset) | {
            "event_id": event_id, "event_type": event_type, "sender": sender,
            "case_ref": case_ref, "created_at": at, "sequence": sequence + 1, "prev_hash": prev,
            "envelope_hash": digest, "correlation_id": correlation_id,
            "to": sorted({country(r) for r in recipients}), "agreement_id": agreement_id,
            "recipients": list(recipients)}

    def crossing(self, sender: str, event_type: str, recipients: tuple[str, ...], at_s: float,
                 arrive_s: Mapping[str, float | None] | None = None, case_ref: str = "CASE-0001",
                 correlation_id: str | None = None, refuse: str | None = None,
                 agreement_id: str | None = AGREEMENT) -> dict[str, Any]:
        """An event routed across a federation: at the sender's country a ``delivered`` record for
        its local recipients (if any) and one ``forwarded`` record per other country; at each of those
        after ``arrive_s[country]`` seconds (default 1; None: not arrived yet) a ``delivered`` record
        of the corridor ``cb.xb.<from>.<to>``, or a ``quarantined`` one with the code ``refuse``.
        Returns the envelope's record (all its recipients)."""
        home = country(sender)
        event = self.envelope(sender, event_type, recipients, at_s, case_ref, correlation_id, agreement_id)
        local = tuple(r for r in recipients if country(r) == home)
        if local:
            self.add(event | {"recipients": list(local)}, f"{home}.{topics.AUDIT}")
        for target in sorted({country(r) for r in recipients} - {home}):
            self.forward(event, target, at_s, (arrive_s or {}).get(target, 1.0), refuse)
        return event

    def forward(self, event: dict[str, Any], target: str, at_s: float, after_s: float | None,
                refuse: str | None) -> None:
        home = country(event["sender"])
        there = [r for r in event["recipients"] if country(r) == target]
        self.add(event | {"outcome": "forwarded", "recipients": there}, f"{home}.{topics.AUDIT}")
        if after_s is None:
            return
        corridor = f"{topics.XB_PREFIX}{home}.{target}"
        arrived = event | {"decided_at": self.start + timedelta(seconds=at_s + after_s), "topic": corridor,
                           "offset": self.next_offset(corridor), "recipients": there}
        if refuse:
            arrived |= {"outcome": "quarantined", "code": refuse, "envelope_hash": None, "recipients": []}
        self.add(arrived, f"{target}.{topics.AUDIT}")

    def receipt(self, original: dict[str, Any], recipient: str, at_s: float,
                kind: str = "receipt.delivered") -> dict[str, Any]:
        return self.event(recipient, kind, (original["sender"],), at_s, original["case_ref"],
                          original["event_id"])

    def alert(self, kind: str, opened_by: dict[str, Any], notified: tuple[str, ...],
              at_s: float) -> dict[str, Any]:
        """A deadline tracker record (``deadline.approaching`` or ``sla.breached``): not chained."""
        at = self.start + timedelta(seconds=at_s)
        record = base(at, kind, "deadline-tracker", 0) | {
            "event_id": f"alert-{kind}-{opened_by['event_id']}", "event_type": kind,
            "sender": "REG.DEADLINES", "case_ref": opened_by["case_ref"], "created_at": at, "sequence": 0,
            "prev_hash": b"", "envelope_hash": hashlib.sha256(f"{kind}{at}".encode()).digest(),
            "correlation_id": opened_by["event_id"], "to": list(notified),
            "agreement_id": opened_by["agreement_id"], "recipients": list(notified)}
        return self.add(record)

    def unverifiable(self, topic: str, code: str, at_s: float) -> dict[str, Any]:
        """A record refused before its signature verified: no header fields at all."""
        record = base(self.start + timedelta(seconds=at_s), "quarantined", topic, 99) | {"code": code}
        return self.add(record)


def country(participant: str) -> str:
    return participant.split(".")[0]


def base(at: datetime, outcome: str, topic: str, offset: int) -> dict[str, Any]:
    return {"decided_at": at, "outcome": outcome, "code": None, "flags": [], "topic": topic,
            "partition": 0, "offset": offset, "event_id": None, "event_type": None, "sender": None,
            "case_ref": None, "created_at": None, "sequence": None, "prev_hash": None,
            "envelope_hash": None, "correlation_id": None, "to": [], "agreement_id": None,
            "recipients": []}


def demo_flow(start: datetime) -> list[dict[str, Any]]:
    """A small cross-border flow: 4 events KH-TH (one an answer), 1 LA-TH, 1 domestic TH, 2 refused,
    one obligation breached and unanswered, one met after a warning; every delivery but two receipted."""
    w = Writer(start)
    ident = w.event("TH.MSDHS", "identification.decided", ("KH.MOSVY", "KH.CWCC"), 0)
    w.receipt(ident, "KH.MOSVY", 1.0)
    w.receipt(ident, "KH.CWCC", 2.0)
    request = w.event("TH.MSDHS", "nationality_verification.requested", ("KH.MOI",), 10, "CASE-0002")
    w.receipt(request, "KH.MOI", 10.5)
    w.alert("deadline.approaching", request, ("KH.MOI", "REG.SECRETARIAT"), 40)
    w.alert("sla.breached", request, ("KH.MOI", "REG.SECRETARIAT"), 50)
    other = w.event("TH.MSDHS", "nationality_verification.requested", ("KH.MOI",), 12)
    w.receipt(other, "KH.MOI", 14.0)
    w.alert("deadline.approaching", other, ("KH.MOI", "REG.SECRETARIAT"), 42)
    answer = w.event("KH.MOI", "nationality_verification.responded", ("TH.MSDHS",), 45, "CASE-0001",
                     other["event_id"])
    w.receipt(answer, "TH.MSDHS", 46.0)
    w.event("LA.MLSW", "referral.sent", ("TH.MSDHS",), 20, "CASE-0003", agreement_id="MOU-LA-TH")
    w.event("TH.RTP", "referral.sent", ("TH.MSDHS",), 21, "CASE-0003", agreement_id=None)
    w.event("TH.MSDHS", "origin.notified", ("KH.MOSVY",), 30, "CASE-0004", code="consent_missing")
    w.unverifiable("cb.out.VN.MOLISA", "bad_signature", 31)
    return w.records
