"""The router's decision for one record of a ``cb.out.<participant>`` topic, as a pure function.

Order of checks (each failure is a ``Quarantine`` with its stable code): size and signature
(``sealing.verify``: verify before decode), the signer owns the topic, the Kafka key is the case
reference, no replay (the same event id in other bytes; the sender's own retransmission of the
same bytes is a ``Duplicate``, dropped), the sender's chain (sequence and previous hash: a gap is flagged, not
dropped), the agreement (``routing.route``, re-evaluated independently of the sender), and every
key wrap of the envelope within what the agreement grants. The router holds no decryption key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from casebridge.core import avro, sealing
from casebridge.core.errors import CaseBridgeError
from casebridge.core.model import CaseState, Directory, Header, apply_case_flags
from casebridge.core.routing import Deliver, Policy, route
from casebridge.core.topics import owner_of


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
    decision: Deliver
    recipients: tuple[str, ...]
    flags: tuple[str, ...]  # e.g. ("sequence_gap",): delivered, but flagged in audit
    sender_state: SenderState
    case_state: CaseState


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


def admit(data: bytes, ctx: Context) -> sealing.VerifiedEnvelope | Quarantine:
    """Size, signature, signer's key and age, before anything is decoded past the signer's name."""
    try:
        return sealing.verify(data, ctx.directory, ctx.now, ctx.max_age, schemas=ctx.schemas)
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
    problem = check_origin(header, key, where)
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
    decision = route(header, ctx.policy, ctx.directory, case, ctx.now)
    if not isinstance(decision, Deliver):
        return Quarantine(decision.code, decision.why, header)
    overreach = check_wraps(verified, decision)
    if overreach is not None:
        return overreach
    recipients = tuple(sorted(set(header.recipients) & decision.grants.keys()))
    if not recipients:
        return Quarantine("recipient_not_permitted", "no sealed recipient is permitted", header)
    flags, next_sender = chain_step(header, verified.hash, sender)
    return Forward(
        header, verified.hash, decision, recipients, flags, next_sender, apply_case_flags(case, header)
    )


def check_origin(header: Header, key: bytes | None, where: Position) -> Quarantine | None:
    owner = owner_of(where.topic)
    if owner != header.sender:
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
    header: Header, envelope_hash: bytes, state: SenderState
) -> tuple[tuple[str, ...], SenderState]:
    """Flags for this link of the sender's chain, and the chain state after it."""
    flags: tuple[str, ...] = ()
    if header.sequence != state.sequence + 1 or header.prev_hash != state.last_hash:
        flags = ("sequence_gap",) if state.sequence or header.sequence != 1 else ()
    if header.sequence <= state.sequence:
        return flags, state  # an older link re-sent: keep the newest head
    return flags, replace(state, sequence=header.sequence, last_hash=envelope_hash)
