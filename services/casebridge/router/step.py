"""The router's decision for one outbox record as a pure step: ``step(state, record, ctx) ->
Step(outgoing records, state changes, log line)``. No Kafka here: the loop (loop.py) polls,
steps, produces and commits; unit tests drive this module without a broker.

What one record yields, all in the batch's transaction:
- accepted: the unchanged bytes to each permitted recipient's ``cb.in.*`` (with ``ce_*``
  headers), an audit record, and the changes of the partition's tables; in a federation, the
  recipients of other countries get the bytes through their country's corridor ``cb.xb.*``
  (one copy per country, audited ``forwarded``), with the case's consent scopes in the header
  ``cb_case_consent``: consent is recorded where the victim is (``consent.recorded`` stays in
  that country by agreement), so the destination's router learns it from the origin's, whose
  corridor only it can write; the last scopes either router knew win;
- refused: a quarantine record, an audit record and, when the bytes verified, a signed
  ``receipt.rejected`` to the owner of the outbox it was written to (who wrote it);
- a retransmission of bytes already accepted: nothing (delivered once);
- a record whose outputs Kafka could not take because of the record itself (too large, with its
  copies and headers): quarantined ``oversized`` with its first 64 KiB, size and hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from casebridge.core import issued, relay, topics
from casebridge.core.keys import Identity
from casebridge.core.model import CaseState, Header, country_of
from casebridge.core.sealing import VerifiedEnvelope, envelope_hash
from casebridge.core.stream import Change, Out, Record, Step, Tables
from casebridge.router.state import Seen, expired

CONSENT_HEADER = "cb_case_consent"  # on a corridor record: the case's consent scopes at the origin
MAX_RECORD_BYTES = 1_000_000  # below the brokers' 1 MiB message.max.bytes, with room for batch overhead
SIZE_SLACK = 65_536  # room for the small fields of an output, beyond those taken from the envelope
KEY_LIMIT = 1_024  # a longer Kafka key (a case reference) is not copied into refusal records


@dataclass(frozen=True)
class Ctx:
    """What a step knows besides the state: the relay context, the router's signing identity."""

    relay: relay.Context
    router: Identity
    max_record_bytes: int = MAX_RECORD_BYTES
    poison: frozenset[tuple[str, int, int]] = frozenset()  # records Kafka refused to take

    @property
    def now(self) -> datetime:
        return self.relay.now

    @property
    def keep_seen(self) -> timedelta:
        """How long an event id must be remembered: while its envelope is not yet ``stale``."""
        return self.relay.max_age + timedelta(hours=1)


def step(state: Tables, record: Record, ctx: Ctx,
         admitted: VerifiedEnvelope | relay.Quarantine | None = None) -> Step:
    """The router's outcome for one record; ``admitted`` is ``relay.admit(record.value)`` when the
    loop verified it ahead (in parallel), else it is computed here."""
    value = record.value or b""
    if record.at in ctx.poison:
        return oversized(record, None, ctx, "Kafka refused this record's outputs")
    verified = admitted if admitted is not None else relay.admit(value, ctx.relay)
    try:
        if isinstance(verified, relay.Quarantine):
            result = refused(record, verified, ctx)
        else:
            result = decided(state, record, verified, ctx)
    except Exception as exc:  # a fault of ours: keep the record, never stop the stream on it
        return contained(record, exc, ctx)
    if near_limit(record, ctx) and any(out.size > ctx.max_record_bytes for out in result.outgoing):
        header = verified.header if isinstance(verified, VerifiedEnvelope) else None
        return oversized(record, header, ctx, "its outputs exceed the largest record Kafka takes")
    return result


def near_limit(record: Record, ctx: Ctx) -> bool:
    """Whether any output of ``record`` could exceed the record limit. Every output is at most the
    record's bytes (a copy, or the original kept in quarantine), its key and header values taken
    from its envelope (so no longer than its bytes) and a few small fields; below this bound the
    sizes need not be summed (~15 us an envelope)."""
    return 3 * len(record.value or b"") + len(record.key or b"") + SIZE_SLACK > ctx.max_record_bytes


def decided(state: Tables, record: Record, verified: VerifiedEnvelope, ctx: Ctx) -> Step:
    header = verified.header
    seen = state["e"].get(header.event_id)
    case = state["c"].get(header.case_ref, CaseState())
    if topics.corridor_ends(record.topic) is not None:  # the case's consent as the origin knows it
        case = CaseState(consent_of(record), case.witness_hold)
    outcome = relay.decide(
        verified,
        record.key,
        where(record),
        seen.accepted if seen else None,
        state["s"].get(header.sender, relay.SenderState()),
        case,
        ctx.relay,
    )
    if isinstance(outcome, relay.Quarantine):
        return refused(record, outcome, ctx)
    if isinstance(outcome, relay.Duplicate):
        first = outcome.first
        return Step((), (), "duplicate", {"event_id": header.event_id, "sender": header.sender,
                                          "first_offset": first.offset})
    return forward(state, record, outcome, ctx)


def forward(state: Tables, record: Record, outcome: relay.Forward, ctx: Ctx) -> Step:
    """Deliver to this cluster's recipients, forward once to each other country's corridor (in a
    federation); an audit record for each ("delivered" here, "forwarded" per corridor)."""
    header = outcome.header
    key = header.case_ref.encode()
    headers = tuple(issued.cloudevent_headers(header))
    decision = outcome.decision
    agreement = decision.agreements[0][0] if decision is not None and decision.agreements else None
    outgoing = [Out(topics.inbox(r), key, record.value, headers) for r in outcome.recipients]
    if outcome.recipients:
        outgoing.append(Out(topics.AUDIT, key, issued.audit_record(
            ctx.relay.schemas, header, outcome.envelope_hash, record.at, "delivered", None,
            outcome.recipients, outcome.flags, ctx.now, agreement)))
    here = ctx.relay.country
    crossing = (*headers, (CONSENT_HEADER, ",".join(sorted(outcome.case_state.consent)).encode()))
    for country, recipients in outcome.corridors:
        assert here is not None
        outgoing.append(Out(topics.corridor(here, country), key, record.value, crossing))
        outgoing.append(Out(topics.AUDIT, key, issued.audit_record(
            ctx.relay.schemas, header, outcome.envelope_hash, record.at, "forwarded", None,
            recipients, outcome.flags, ctx.now, agreement)))
    changes = [Change("e", header.event_id, Seen(relay.Accepted(where(record), outcome.envelope_hash),
                                                 header.created_at))]
    if state["s"].get(header.sender) != outcome.sender_state:
        changes.append(Change("s", header.sender, outcome.sender_state))
    if state["c"].get(header.case_ref, CaseState()) != outcome.case_state:
        changes.append(Change("c", header.case_ref, outcome.case_state))
    forwarded = {c: list(r) for c, r in outcome.corridors}
    return Step(
        tuple(outgoing),
        tuple(changes),
        "delivered",
        {"event_id": header.event_id, "sender": header.sender, "event_type": header.event_type,
         "recipients": list(outcome.recipients), "flags": list(outcome.flags),
         **({"forwarded": forwarded} if forwarded else {})},
    )


def consent_of(record: Record) -> frozenset[str]:
    """The consent scopes the origin's router had for the case when it forwarded this record
    (none when the header is missing: deny by default)."""
    raw = record.header(CONSENT_HEADER) or b""
    return frozenset(s for s in raw.decode("ascii", "replace").split(",") if s)


def refused(record: Record, outcome: relay.Quarantine, ctx: Ctx) -> Step:
    """Quarantine, audit, and a signed rejection to the outbox's owner when the bytes verified."""
    header = outcome.header
    key = record.key if record.key is not None and len(record.key) <= KEY_LIMIT else None
    schemas = ctx.relay.schemas
    outgoing = [
        Out(topics.QUARANTINE, key, issued.quarantine_record(schemas, outcome.code, outcome.why, header,
                                                             record.at, record.value or b"", ctx.now)),
        Out(topics.AUDIT, key, issued.audit_record(schemas, header, None, record.at, "quarantined",
                                                   outcome.code, (), (), ctx.now)),
    ]
    receipt = rejection_out(record, header, outcome, ctx)
    if receipt is not None:
        outgoing.append(receipt)
    return Step(tuple(outgoing), (), "quarantined", summary(outcome.code, header))


def rejection_out(record: Record, header: Header | None, outcome: relay.Quarantine, ctx: Ctx) -> Out | None:
    """The signed ``receipt.rejected`` to whoever wrote the record: the owner of its outbox; for a
    corridor record, its signer in the origin country, back through the reverse corridor."""
    directory = ctx.relay.directory
    ends = topics.corridor_ends(record.topic)
    owner = topics.owner_of(record.topic)
    if ends is not None and header is not None and country_of(header.sender) == ends[0]:
        owner = header.sender
    if header is None or header.event_type == "receipt.rejected" or owner not in directory.participants:
        return None
    assert owner is not None
    receipt_header, data = issued.rejection(ctx.relay.schemas, directory, ctx.router, header, owner,
                                            envelope_hash(record.value or b""), outcome.code, outcome.why,
                                            ctx.now)
    topic = topics.inbox(owner) if ends is None else topics.corridor(ends[1], ends[0])
    headers = tuple(issued.cloudevent_headers(receipt_header))
    return Out(topic, receipt_header.case_ref.encode(), data, headers)


def oversized(record: Record, header: Header | None, ctx: Ctx, why: str) -> Step:
    """Keep a record whose outputs are too large for Kafka: its first bytes, size and hash; the
    audit and the rejection only where they fit (a huge case reference does not)."""
    outcome = relay.Quarantine("oversized", why, header)
    schemas = ctx.relay.schemas
    key = record.key if record.key is not None and len(record.key) <= KEY_LIMIT else None
    kept = Out(topics.QUARANTINE, key, issued.quarantine_record(
        schemas, "oversized", why, None, record.at, record.value or b"", ctx.now, keep=issued.KEPT_ORIGINAL))
    audit = Out(topics.AUDIT, key, issued.audit_record(schemas, header, None, record.at, "quarantined",
                                                       "oversized", (), (), ctx.now))
    if audit.size > ctx.max_record_bytes:
        audit = Out(topics.AUDIT, key, issued.audit_record(schemas, None, None, record.at, "quarantined",
                                                           "oversized", (), (), ctx.now))
    outgoing = [kept, audit]
    fits = header is not None and len(header.case_ref) <= KEY_LIMIT
    receipt = rejection_out(record, header, outcome, ctx) if fits else None
    if receipt is not None and receipt.size <= ctx.max_record_bytes:
        outgoing.append(receipt)
    return Step(tuple(outgoing), (), "quarantined", summary("oversized", header))


def contained(record: Record, exc: Exception, ctx: Ctx) -> Step:
    """Quarantine a record the router failed on (a bug of ours), so it is neither lost nor retried
    forever; the log line names the error type."""
    why = f"the router failed on this record ({type(exc).__name__})"
    result = refused(record, relay.Quarantine("malformed", why), ctx)
    return Step(result.outgoing, (), "quarantined", {"code": "malformed", "router_fault": type(exc).__name__})


def where(record: Record) -> relay.Position:
    return relay.Position(record.topic, record.partition, record.offset)


def summary(code: str, header: Header | None) -> dict[str, Any]:
    if header is None:
        return {"code": code}
    return {"code": code, "event_id": header.event_id, "sender": header.sender}


def expire(state: Tables, partition: int, ctx: Ctx) -> Step:
    """Forget the event ids of envelopes that are stale by now (the state stays bounded)."""
    return Step((), tuple(expired(state, ctx.now, ctx.keep_seen)), "expired", {"partition": partition})
