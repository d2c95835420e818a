"""What a node does with an event, between its HTTP API / inbox topic and its store.

``submit`` checks, routes, seals and queues an event from the hub's case system (the outbox row
is written before anything is published); ``receive`` verifies and decrypts an inbound envelope,
stores it once and queues the ``receipt.delivered``; receipts for our own events move their
status forward. Everything refused is kept, with its code. ``submit_many`` and ``receive_many``
do the same for a batch in one transaction (one sync to disk for all of them).

Each event goes to the partition of ``cb.out.<me>`` that its case reference hashes to
(``topics.partition_for``, with the partition count the store was made for) and extends that
partition's chain: sequence and ``prev_hash`` are
those of the partition's chain head.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from casebridge.core import handover, jsonform, limits, sealing, topics
from casebridge.core.errors import CaseBridgeError, Oversized, Replay, SchemaInvalid
from casebridge.core.keys import Identity
from casebridge.core.model import (
    CaseState,
    Header,
    apply_case_flags,
)
from casebridge.core.routing import Deliver, route
from casebridge.node import consent, store, validate
from casebridge.node.vault import Vault, protect
from casebridge.runtime.world import World

CONSENT_EVENTS = frozenset({"consent.recorded", "consent.withdrawn"})
RECEIPT_KINDS = {
    "receipt.delivered": "delivered",
    "receipt.processed": "processed",
    "receipt.rejected": "rejected",
}


@dataclass(frozen=True)
class Submitted:
    event_id: str
    status: str  # queued, or rejected
    code: str | None = None
    why: str | None = None
    recipients: tuple[str, ...] = ()
    withheld: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # recipient -> categories


@dataclass(frozen=True)
class Received:
    event_id: str | None
    outcome: str  # stored, duplicate, receipt, receipt_ignored, quarantined
    code: str | None = None
    header: Header | None = None


def parse_event(doc: Mapping[str, Any]) -> tuple[str, str, tuple[str, ...], Mapping[str, Any]]:
    """The (event type, case ref, addressees, payload) of a submitted JSON event, or ``Malformed``
    (``validate.event_document``: shape, known fields, bounds)."""
    validate.event_document(doc)
    return doc["event_type"], doc["case_ref"], tuple(doc.get("to", [])), doc.get("payload", {})


Parsed = tuple[str, str, tuple[str, ...], Mapping[str, Any]]


def draft_header(
    me: Identity, doc: Mapping[str, Any], now: datetime, head: tuple[int, bytes], known: CaseState,
    parsed: Parsed | None = None,
) -> Header:
    """The header of a submitted event; other than consent.* events, it tells the case's consent
    scopes as this node knows them (metadata, so counterparts can check before they send).
    ``parsed``: ``parse_event(doc)``, if the caller has it."""
    event_type, case_ref, to, _ = parsed or parse_event(doc)
    scopes = doc.get("consent_scopes", ()) if event_type in CONSENT_EVENTS else sorted(known.consent)
    handling = doc.get("handling_code", "H2")
    return Header(
        event_id=str(doc.get("event_id") or uuid.uuid4()),
        event_type=event_type,
        sender=me.participant,
        sender_key_id=me.signing_key_id,
        created_at=now,
        case_ref=case_ref,
        to=to,
        handling_code=handling,
        correlation_id=doc.get("correlation_id"),
        sequence=head[0] + 1,
        prev_hash=head[1],
        consent_scopes=tuple(scopes),
        witness_hold=doc.get("witness_hold"),
        **forward_fields(doc),
    )


def forward_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """H3 conditions and, on a forward (``protection.request_forward``), the provider's permission."""
    fields = {k: doc.get(k) for k in ("handling_conditions", "forward_of", "permitted_by", "permit_key_id")}
    signature = doc.get("permit_signature", b"")  # bytes: set by the node, never from JSON
    return {**fields, "permit_signature": signature if isinstance(signature, bytes) else b""}


def case_state_of(conn: sqlite3.Connection, case_ref: str) -> CaseState:
    saved = store.load_case_state(conn, case_ref)
    return CaseState(frozenset(saved.get("consent", ())), bool(saved.get("witness_hold", False)))


def remember_flags(conn: sqlite3.Connection, header: Header, known: CaseState | None = None) -> None:
    """Keep the case's consent and witness-hold flags that this header carries (the router keeps
    its own table and decides; this is the node's view for its own pre-check). ``known``: the
    case's state as just read, if the caller has it; nothing is written when nothing changes."""
    before = known if known is not None else case_state_of(conn, header.case_ref)
    state = apply_case_flags(before, header)
    if header.event_type not in CONSENT_EVENTS and header.consent_scopes:
        state = CaseState(frozenset(header.consent_scopes), state.witness_hold)
    if known is not None and state == known:
        return
    store.save_case_state(
        conn, header.case_ref, {"consent": sorted(state.consent), "witness_hold": state.witness_hold}
    )


def submit(
    world: World, me: Identity, conn: sqlite3.Connection, doc: Mapping[str, Any], now: datetime
) -> Submitted:
    """Route, seal and queue one event (one transaction); refusals are kept with their code."""
    with store.transaction(conn):
        return queue_submitted(world, me, conn, doc, now)


def queue_submitted(
    world: World, me: Identity, conn: sqlite3.Connection, doc: Mapping[str, Any], now: datetime
) -> Submitted:
    """A hub's event queued inside the caller's transaction; a consent withdrawal also queues its
    signed notices to every participant that received records under the scopes withdrawn."""
    result = queue_event(world, me, conn, doc, now)
    if result.status == "queued" and doc.get("event_type") == "consent.withdrawn":
        after = case_state_of(conn, parse_event(doc)[1])
        for notice in consent.withdrawal_notices(world, me, conn, parse_event(doc)[1],
                                                 list(doc.get("consent_scopes", [])), after, now):
            queue_event(world, me, conn, notice, now)
    return result


def submit_many(
    world: World, me: Identity, conn: sqlite3.Connection, docs: Sequence[Mapping[str, Any]], now: datetime
) -> list[Submitted | Exception]:
    """``submit`` for each document, all in one transaction (a group commit): each gets its
    outcome, or the exception ``submit`` would have raised (that document leaves nothing)."""
    results: list[Submitted | Exception] = []
    with store.transaction(conn):
        for doc in docs:
            conn.execute("SAVEPOINT one")
            try:
                results.append(queue_submitted(world, me, conn, doc, now))
            except Exception as exc:  # handed back to its caller, as submit would raise it
                conn.execute("ROLLBACK TO one")
                results.append(exc)
            conn.execute("RELEASE one")
    return results


def partition_of(case_ref: str, partitions: int) -> int:
    """The partition of ``cb.out.<sender>`` (and so the chain) of an event of this case."""
    return topics.partition_for(case_ref.encode(), partitions)


def queue_event(
    world: World, me: Identity, conn: sqlite3.Connection, doc: Mapping[str, Any], now: datetime
) -> Submitted:
    """``submit`` inside the caller's transaction."""
    parsed = parse_event(doc)
    case_ref = parsed[1]
    known = case_state_of(conn, case_ref)
    partition = partition_of(case_ref, store.partition_count(conn))
    header = draft_header(me, doc, now, store.chain_head(conn, partition), known, parsed)
    if store.outbox_row(conn, header.event_id) is not None:
        raise Replay(f"event id {header.event_id} is already used by an event of this node")
    decision = route(header, world.policy, world.directory, known, now)
    if not isinstance(decision, Deliver):
        store.record_refusal(conn, header.event_id, header.case_ref, header.event_type, decision.code, now)
        return Submitted(header.event_id, "rejected", decision.code, decision.why)
    header = _with_agreement(header, decision)
    try:
        payload = payload_values(world, header.event_type, doc.get("payload", {}))
        envelope = sealing.seal(
            header, payload, me, decision.grants, world.directory, now, schemas=world.schemas
        )
        if not limits.record_fits(envelope, header.case_ref.encode()):
            raise Oversized(f"the sealed envelope ({len(envelope)} bytes) exceeds the record limit "
                            f"of {limits.MAX_RECORD_BYTES} bytes")
    except CaseBridgeError as exc:
        store.record_refusal(conn, header.event_id, header.case_ref, header.event_type, exc.code, now)
        return Submitted(header.event_id, "rejected", exc.code, exc.why)
    row = store.OutboxRow(
        header.event_id,
        header.sequence,
        header.case_ref,
        header.event_type,
        tuple(sorted(decision.grants)),
        envelope,
        "queued",
        None,
        partition,
    )
    store.append_outbox(conn, row, sealing.envelope_hash(envelope), now)
    remember_flags(conn, header, known)
    withheld = withheld_categories(doc.get("payload", {}), decision.grants)
    return Submitted(header.event_id, "queued", recipients=row.recipients, withheld=withheld)


def withheld_categories(
    payload: Mapping[str, Any], grants: Mapping[str, frozenset[str]]
) -> dict[str, tuple[str, ...]]:
    """The data categories given in ``payload`` that the agreement does not let each recipient
    see (sealed for the others, never for it): the caller is told, nothing is dropped silently."""
    given = {name for name, value in payload.items() if value is not None}
    return {r: tuple(sorted(given - set(cats))) for r, cats in sorted(grants.items()) if given - set(cats)}


def payload_values(world: World, event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON payload as Avro values of the event type's payload schema (``SchemaInvalid``)."""
    name = world.schemas.event_schemas.get(event_type)
    if name is None:
        raise SchemaInvalid(f"no payload schema for {event_type}")
    document = world.schemas.documents[name]
    result: dict[str, Any] = jsonform.from_json(document, payload, names_of(document))
    return result


_NAMES: dict[int, tuple[Any, dict[str, Any]]] = {}


def names_of(document: Any) -> dict[str, Any]:
    """``jsonform.collect_names`` of a payload schema, worked out once per schema document."""
    cached = _NAMES.get(id(document))
    if cached is None or cached[0] is not document:
        cached = _NAMES[id(document)] = (document, jsonform.collect_names(document, {}))
    return cached[1]


def _with_agreement(header: Header, decision: Deliver) -> Header:
    first = decision.agreements[0] if decision.agreements else (None, None)
    return Header(**{**header.__dict__, "agreement_id": first[0], "agreement_version": first[1]})


def receive(
    world: World, me: Identity, conn: sqlite3.Connection, data: bytes, now: datetime,
    vault: Vault | None = None,
) -> Received:
    """Verify and decrypt (end to end: the router is not trusted), store once (encrypted at rest
    under the case's data keys when a ``vault`` is given, as the node always does), queue the
    receipt (one transaction)."""
    opened = open_inbound(world, me, data, now)
    with store.transaction(conn):
        return take_inbound(world, me, conn, data, now, vault, opened)


def receive_many(
    world: World, me: Identity, conn: sqlite3.Connection, values: Sequence[bytes], now: datetime,
    vault: Vault | None = None,
) -> list[Received]:
    """``receive`` for a batch of inbound envelopes, in one transaction. The n-th is stamped
    received ``n`` microseconds after ``now``, so the inbox (in ``received_at`` order) keeps the
    batch's order, which is the topic's order per case. Every envelope is verified and decrypted
    before the transaction begins, so the store's write lock is not held for the cryptography."""
    opened = [open_inbound(world, me, data, now) for data in values]
    with store.transaction(conn):
        return [take_inbound(world, me, conn, data, now, vault, o)
                for data, o in zip(values, opened, strict=True)]


def open_inbound(
    world: World, me: Identity, data: bytes, now: datetime
) -> sealing.OpenedEvent | CaseBridgeError:
    """The envelope verified and decrypted for ``me`` and its content checked, or why not."""
    try:
        opened = sealing.open(data, me, world.directory, now, world.max_age, schemas=world.schemas)
        check_content(world, opened)
    except CaseBridgeError as exc:
        return exc
    return opened


def take_inbound(
    world: World, me: Identity, conn: sqlite3.Connection, data: bytes, now: datetime,
    vault: Vault | None = None, opened: sealing.OpenedEvent | CaseBridgeError | None = None,
) -> Received:
    """``receive`` inside the caller's transaction (``opened``: ``open_inbound`` of ``data``, if
    the caller has it)."""
    if opened is None:
        opened = open_inbound(world, me, data, now)
    if isinstance(opened, CaseBridgeError):
        store.quarantine(conn, opened.code, opened.why, data, now)
        return Received(None, "quarantined", opened.code)
    header = opened.header
    if header.event_type in RECEIPT_KINDS:
        operational = opened.payload.get("operational") or {}
        answered = operational.get("for_event_id") or header.correlation_id or ""
        if not receipt_matches(conn, header.event_type, answered, operational.get("envelope_hash")):
            return Received(header.event_id, "receipt_ignored", "not_what_we_sent", header=header)
        store.record_receipt(
            conn, answered, RECEIPT_KINDS[header.event_type], header.sender, operational.get("code"), now
        )
        return Received(header.event_id, "receipt", header=header)
    record = inbound_record(opened)
    if not store.store_inbound(conn, protect(vault, conn, record) if vault else record, now):
        return Received(header.event_id, "duplicate", header=header)
    remember_flags(conn, header)
    if header.event_type == consent.NOTICE:
        consent.restrict(conn, header, opened.payload, now)
    receipt = receipt_doc("receipt.delivered", header, sealing.envelope_hash(data), now)
    queue_event(world, me, conn, receipt, now)
    return Received(header.event_id, "stored", header=header)


def receipt_matches(conn: sqlite3.Connection, event_type: str, event_id: str, named: bytes | None) -> bool:
    """False for a ``receipt.rejected`` that names an envelope hash other than the one this node
    published under that event id (the router refused a copy someone else wrote to their outbox:
    our record stands). A rejection naming no hash is taken."""
    if event_type != "receipt.rejected" or not named:
        return True
    row = store.outbox_row(conn, event_id)
    return row is None or row.envelope is None or sealing.envelope_hash(row.envelope) == named


def check_content(world: World, opened: sealing.OpenedEvent) -> None:
    """Checks on what only a recipient can read: both officials' signatures of a handover."""
    operational = opened.payload.get("operational")
    if opened.header.event_type == handover.EVENT_TYPE and operational is not None:
        handover.check_attestations(world.schemas, operational)


def inbound_record(opened: sealing.OpenedEvent) -> dict[str, Any]:
    h = opened.header
    return {
        "event_id": h.event_id,
        "event_type": h.event_type,
        "sender": h.sender,
        "case_ref": h.case_ref,
        "correlation_id": h.correlation_id,
        "created_at": h.created_at.isoformat(),
        "handling_code": h.handling_code,
        "handling_conditions": h.handling_conditions,
        "forward_of": h.forward_of,
        "agreement_id": h.agreement_id,
        "categories": list(opened.categories),
        "payload": jsonform.to_json(opened.payload),
    }


def receipt_doc(event_type: str, answered: Header, envelope_hash: bytes, now: datetime) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "case_ref": answered.case_ref,
        "to": [answered.sender],
        "correlation_id": answered.event_id,
        "handling_code": "H0",
        "payload": {
            "operational": {"for_event_id": answered.event_id, "envelope_hash": envelope_hash, "at": now}
        },
    }


def mark_processed(
    world: World, me: Identity, conn: sqlite3.Connection, event_id: str, now: datetime
) -> Submitted | None:
    """The hub handled an inbox event: note it and queue the signed ``receipt.processed``."""
    with store.transaction(conn):
        record = store.inbox_record(conn, event_id)
        if record is None or not store.mark_processed(conn, event_id, now):
            return None
        answered = Header(
            event_id=event_id,
            event_type=record["event_type"],
            sender=record["sender"],
            sender_key_id="",
            created_at=now,
            case_ref=record["case_ref"],
            to=(),
        )
        receipt = receipt_doc("receipt.processed", answered, b"", now)
        return queue_event(world, me, conn, receipt, now)


def status_of(conn: sqlite3.Connection, event_id: str) -> dict[str, Any] | None:
    row = store.outbox_row(conn, event_id)
    receipts = store.receipts_for(conn, event_id)
    if row is None:  # not ours, but receipts may name it (e.g. a refused misdirected envelope)
        return {"event_id": event_id, "status": "unknown", "receipts": receipts} if receipts else None
    return {
        "event_id": event_id,
        "status": row.status,
        "reason": row.reason,
        "event_type": row.event_type,
        "case_ref": row.case_ref,
        "sequence": row.sequence,
        "recipients": list(row.recipients),
        "receipts": receipts,
    }
