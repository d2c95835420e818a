"""The router's decision for one record of a ``cb.out.<participant>`` topic, as a pure function.

Order of checks (each failure is a ``Quarantine`` with its stable code): size and signature
(``sealing.verify``: verify before decode), the signer owns the topic, the Kafka key is the case
reference, no replay (the same event id in other bytes; the sender's own retransmission of the
same bytes is a ``Duplicate``, dropped), the sender's chain (sequence and previous hash: a gap is flagged, not
dropped), the agreement (``routing.route``, re-evaluated independently of the sender), and every
key wrap of the envelope within what the agreement grants. The router holds no decryption key.

In a federation (``Context.country`` set: one cluster per country) the router of country C reads
its own participants' outboxes and the corridors ``cb.xb.<D>.C`` that C's MirrorMaker copied from
its partners. An outbox record is delivered to C's recipients and forwarded, once per country, to
the others (``Forward.corridors``). A corridor record is checked again from the start, as if it
had been written here: the signer must belong to the corridor's origin country D, the agreement is
evaluated again, and only C's own recipients get it (never passed on: no transit). A corridor
carries only the part of a sender's chain addressed to C, so there the chain must only move
forward (a gap is expected and not flagged). The one record of another signer a corridor may
carry is the router's own ``receipt.rejected`` to a participant of C. A corridor record is routed
with the case's consent scopes as its origin's router knew them (``router.step``: the consent is
recorded where the victim is, and that record stays in its country).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from casebridge.core import avro, sealing
from casebridge.core.errors import CaseBridgeError
from casebridge.core.issued import ROUTER
from casebridge.core.model import CaseState, Directory, Header, apply_case_flags, country_of
from casebridge.core.routing import Deliver, Policy, route
from casebridge.core.topics import corridor_ends, owner_of


@dataclass(frozen=True)
class Position:
    """Where a record sits in Kafka: the same record read again has the same position, a replay another."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Accepted:
    """Where an event id was accepted, and the hash of the envelope accepted there."""

    position: Position
    envelope_hash: bytes = b""  # empty: not known (the record cannot be proved identical)


@dataclass(frozen=True)
class SenderState:
    """The last accepted link of a sender's chain."""

    sequence: int = 0
    last_hash: bytes = b""


@dataclass(frozen=True)
class Forward:
    """Deliver the unchanged bytes to each recipient's inbox; then apply the new states."""

    header: Header
    envelope_hash: bytes
    decision: Deliver | None  # None: the router's own rejection, come back through a corridor
    recipients: tuple[str, ...]  # delivered here: to their cb.in.* topics
    flags: tuple[str, ...]  # e.g. ("sequence_gap",): delivered, but flagged in audit
    sender_state: SenderState
    case_state: CaseState
    corridors: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (country, its recipients): forwarded


@dataclass(frozen=True)
class Quarantine:
    """Keep the record aside with a stable code; tell the sender when it is known."""

    code: str
    why: str
    header: Header | None = None  # None when the bytes could not be verified


@dataclass(frozen=True)
class Duplicate:
    """An envelope already accepted: the sender's retransmission of the same bytes at a later offset
    of its own topic (a publish retried after a lost acknowledgement), or the same record read
    again. Dropped: delivered once."""

    header: Header
    first: Position


@dataclass(frozen=True)
class Context:
    """What the router knows when it decides (passed in; the core keeps no state)."""

    directory: Directory
    policy: Policy
    schemas: avro.SchemaSet
    now: datetime
    max_age: timedelta = timedelta(days=7)
    country: str | None = None  # the router's country in a federation; None: one shared cluster


def admit(data: bytes, ctx: Context, checked: sealing.Checked | None = None
          ) -> sealing.VerifiedEnvelope | Quarantine:
    """Size, signature, signer's key and age, before anything is decoded past the signer's name;
    ``checked``: the signature's check made ahead (``sealing.verify``)."""
    try:
        return sealing.verify(data, ctx.directory, ctx.now, ctx.max_age, schemas=ctx.schemas, checked=checked)
    except CaseBridgeError as exc:
        return Quarantine(exc.code, exc.why)


def decide(
    verified: sealing.VerifiedEnvelope,
    key: bytes | None,
    where: Position,
    seen: Accepted | None,
    sender: SenderState,
    case: CaseState,
    ctx: Context,
) -> Forward | Quarantine | Duplicate:
    """The router's outcome for one verified record; ``seen``: where its event id was accepted."""
    header = verified.header
    ends = corridor_ends(where.topic)
    problem = check_origin(header, key, where, ctx.country)
    if problem is not None:
        return problem
    if seen is not None:  # accepted in a committed transaction: its offset was committed with it
        if seen.position == where or seen.envelope_hash == verified.hash:
            return Duplicate(header, seen.position)
        first = seen.position
        return Quarantine(
            "replay",
            f"event {header.event_id} was accepted before at {first.topic}/{first.partition}@{first.offset}",
            header,
        )
    if ends is not None and header.sender == ROUTER:
        return returned_rejection(verified, sender, case, ctx)
    decision = route(header, ctx.policy, ctx.directory, case, ctx.now)
    if not isinstance(decision, Deliver):
        return Quarantine(decision.code, decision.why, header)
    overreach = check_wraps(verified, decision)
    if overreach is not None:
        return overreach
    recipients = tuple(sorted(set(header.recipients) & decision.grants.keys()))
    local, corridors = split(recipients, ctx.country)
    if ends is not None:  # from a partner: delivered here only, never passed on
        corridors = ()
        if not local:
            return Quarantine("recipient_not_permitted",
                              f"no permitted recipient of {ctx.country} in this corridor record", header)
    elif not recipients:
        return Quarantine("recipient_not_permitted", "no sealed recipient is permitted", header)
    flags, next_sender = chain_step(header, verified.hash, sender, partial=ends is not None)
    return Forward(header, verified.hash, decision, local, flags, next_sender,
                   apply_case_flags(case, header), corridors)


def split(recipients: tuple[str, ...], country: str | None
          ) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    """(recipients on this cluster, (country, recipients) of every other): all local without a federation."""
    if country is None:
        return recipients, ()
    local = tuple(r for r in recipients if country_of(r) == country)
    others = sorted({country_of(r) for r in recipients} - {country})
    return local, tuple((c, tuple(r for r in recipients if country_of(r) == c)) for c in others)


def returned_rejection(verified: sealing.VerifiedEnvelope, sender: SenderState, case: CaseState,
                       ctx: Context) -> Forward | Quarantine:
    """A partner's router refused an envelope of one of ours: its signed ``receipt.rejected`` (to the
    owner of the refused record, a participant of this country) is delivered as it is."""
    header = verified.header
    local, others = split(tuple(sorted(header.recipients)), ctx.country)
    if header.event_type != "receipt.rejected" or others or not local:
        return Quarantine("sender_topic_mismatch",
                          f"{header.sender} may send only receipt.rejected through a corridor",
                          header)
    if any(r not in ctx.directory.participants for r in local):
        return Quarantine("recipient_not_permitted", "a recipient is not in the directory", header)
    return Forward(header, verified.hash, None, local, (), sender, case)


def check_origin(header: Header, key: bytes | None, where: Position, country: str | None = None
                 ) -> Quarantine | None:
    ends = corridor_ends(where.topic)
    if ends is not None:
        origin, destination = ends
        signer_country = country_of(header.sender)
        if destination != country or (signer_country != origin and header.sender != ROUTER):
            return Quarantine("sender_topic_mismatch",
                              f"{header.sender} came through the corridor {where.topic} to {country}", header)
    elif owner_of(where.topic) != header.sender:
        return Quarantine("sender_topic_mismatch", f"{header.sender} wrote to {where.topic}", header)
    if key != header.case_ref.encode():
        return Quarantine("malformed", "the Kafka key is not the header's case reference", header)
    return None


def check_wraps(verified: sealing.VerifiedEnvelope, decision: Deliver) -> Quarantine | None:
    """Every category sealed for a recipient must be one the agreement grants it."""
    for section in verified.sections:
        for recipient in section.recipients:
            if section.category not in decision.grants.get(recipient, frozenset()):
                return Quarantine(
                    "recipient_not_permitted", f"{recipient} may not see {section.category}", verified.header
                )
    return None


def chain_step(
    header: Header, envelope_hash: bytes, state: SenderState, partial: bool = False
) -> tuple[tuple[str, ...], SenderState]:
    """Flags for this link of the sender's chain, and the chain state after it; ``partial``: the
    part of the chain a corridor carries, where only a link that goes backwards is flagged."""
    flags: tuple[str, ...] = ()
    if partial:
        flags = ("sequence_gap",) if header.sequence <= state.sequence else ()
    elif header.sequence != state.sequence + 1 or header.prev_hash != state.last_hash:
        flags = ("sequence_gap",) if state.sequence or header.sequence != 1 else ()
    if header.sequence <= state.sequence:
        return flags, state  # an older link re-sent: keep the newest head
    return flags, replace(state, sequence=header.sequence, last_hash=envelope_hash)
