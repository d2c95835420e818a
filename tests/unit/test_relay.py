"""The router's pure decision (``casebridge.core.relay``) on envelopes sealed in a run-time network."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

import pytest

from casebridge.core import relay, sealing
from casebridge.core.model import CaseState, Header
from casebridge.core.routing import Deliver, route
from casebridge.runtime.world import World, bootstrap_network
from tests.unit.envelope_factories import example_payload

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CASE = "case-7f3a"
TOPIC = "cb.out.TH.MSDHS"
HERE = relay.Position(TOPIC, 0, 41)
ELSEWHERE = relay.Position(TOPIC, 0, 7)
FRESH = relay.SenderState()
NGO_OK = CaseState(frozenset({"origin_notification", "ngo_sharing", "family_tracing"}))


@cache
def home() -> Path:
    return Path(mkdtemp(prefix="cb-relay-"))


@cache
def world() -> World:
    """One run-time network (keys generated now, agreements signed now) for the whole module."""
    return bootstrap_network(home(), NOW - timedelta(hours=1))


@pytest.fixture(scope="module", autouse=True)
def _remove_the_keys() -> Iterator[None]:
    """The run-time private keys do not outlive the module."""
    yield
    shutil.rmtree(home(), ignore_errors=True)
    home.cache_clear()
    world.cache_clear()


def make_header(event_type: str = "return_plan.proposed", sender: str = "TH.MSDHS", **over: Any) -> Header:
    base = Header(
        event_id=str(uuid.uuid4()),
        event_type=event_type,
        sender=sender,
        sender_key_id="",
        created_at=NOW - timedelta(minutes=1),
        case_ref=CASE,
        to=("KH",),
        sequence=1,
    )
    return replace(base, **over)


def granted(header: Header, case: CaseState = NGO_OK) -> dict[str, frozenset[str]]:
    decision = route(header, world().policy, world().directory, case, NOW)
    assert isinstance(decision, Deliver), decision
    return dict(decision.grants)


def sealed(header: Header, grants: dict[str, frozenset[str]] | None = None) -> bytes:
    """The wire bytes of ``header`` sealed by its sender for ``grants`` (default: what routing grants)."""
    grants = granted(header) if grants is None else grants
    w = world()
    return sealing.seal(
        header,
        example_payload(header.event_type),
        w.identity(header.sender),
        grants,
        w.directory,
        NOW,
        schemas=w.schemas,
    )


def verified(data: bytes) -> sealing.VerifiedEnvelope:
    outcome = relay.admit(data, world().context(NOW))
    assert isinstance(outcome, sealing.VerifiedEnvelope), outcome
    return outcome


def decide(
    data: bytes,
    *,
    key: bytes | None = CASE.encode(),
    where: relay.Position = HERE,
    seen: relay.Accepted | None = None,
    sender: relay.SenderState = FRESH,
    case: CaseState = NGO_OK,
) -> relay.Forward | relay.Quarantine | relay.Duplicate:
    return relay.decide(verified(data), key, where, seen, sender, case, world().context(NOW))


def test_verified_envelope_is_forwarded_to_the_granted_recipients() -> None:
    """A verified, permitted envelope is forwarded to exactly the recipients the agreement grants."""
    header = make_header()
    outcome = decide(sealed(header))
    assert isinstance(outcome, relay.Forward)
    assert outcome.recipients == tuple(sorted(granted(header)))
    assert set(outcome.recipients) == {"KH.MOSVY", "KH.CWCC"}
    assert outcome.flags == ()
    assert outcome.header.event_id == header.event_id


def test_forward_carries_the_envelope_hash_as_the_new_chain_head() -> None:
    """The first link of a chain moves the sender's state to sequence 1 and this envelope's hash."""
    data = sealed(make_header())
    outcome = decide(data)
    assert isinstance(outcome, relay.Forward)
    assert outcome.envelope_hash == sealing.envelope_hash(data)
    assert outcome.sender_state == relay.SenderState(1, sealing.envelope_hash(data))


@pytest.mark.parametrize(
    ("where", "key", "code"),
    [
        (relay.Position("cb.out.KH.MOSVY", 0, 41), CASE.encode(), "sender_topic_mismatch"),
        (relay.Position("cb.in.TH.MSDHS", 0, 41), CASE.encode(), "sender_topic_mismatch"),
        (HERE, b"case-other", "malformed"),
        (HERE, None, "malformed"),
    ],
)
def test_origin_checks_quarantine(where: relay.Position, key: bytes | None, code: str) -> None:
    """A record on another participant's topic, or keyed other than by its case, is quarantined."""
    outcome = decide(sealed(make_header()), key=key, where=where)
    assert isinstance(outcome, relay.Quarantine)
    assert outcome.code == code
    assert outcome.header is not None


def test_an_event_id_accepted_before_in_other_bytes_is_a_replay() -> None:
    """An event id already accepted at another offset with another envelope is quarantined."""
    header = make_header()
    first = sealed(header)
    again = sealed(header)  # the same header sealed again: other data keys, other bytes
    assert again != first
    outcome = decide(again, seen=relay.Accepted(ELSEWHERE, sealing.envelope_hash(first)))
    assert isinstance(outcome, relay.Quarantine)
    assert outcome.code == "replay"


def test_an_event_id_accepted_before_with_an_unknown_hash_is_a_replay() -> None:
    """Without the accepted envelope's hash the router cannot prove a retransmission: replay."""
    outcome = decide(sealed(make_header()), seen=relay.Accepted(ELSEWHERE))
    assert isinstance(outcome, relay.Quarantine)
    assert outcome.code == "replay"


def test_the_same_bytes_at_a_later_offset_are_a_duplicate_dropped() -> None:
    """A publish retried after a lost acknowledgement: the same envelope again is dropped, once."""
    data = sealed(make_header())
    outcome = decide(data, seen=relay.Accepted(ELSEWHERE, sealing.envelope_hash(data)))
    assert isinstance(outcome, relay.Duplicate)
    assert outcome.first == ELSEWHERE


def test_a_duplicate_on_another_participants_topic_is_still_a_mismatch() -> None:
    """The origin checks come first: the same bytes on a topic the signer does not own are refused."""
    data = sealed(make_header())
    other = relay.Position("cb.out.KH.MOSVY", 0, 41)
    outcome = decide(data, where=other, seen=relay.Accepted(HERE, sealing.envelope_hash(data)))
    assert isinstance(outcome, relay.Quarantine)
    assert outcome.code == "sender_topic_mismatch"


def test_event_seen_at_the_same_position_is_a_duplicate() -> None:
    """The same record read again (its transaction committed) is dropped, even when the hash of
    what was accepted there is not known."""
    header = make_header(sequence=5, prev_hash=b"\x01" * 32)
    data = sealed(header)
    outcome = decide(data, seen=relay.Accepted(HERE, b""))
    assert isinstance(outcome, relay.Duplicate) and outcome.first == HERE


CHAIN = b"\x07" * 32


@pytest.mark.parametrize(
    ("sequence", "prev_hash", "state", "flags", "head_moves"),
    [
        (1, b"", FRESH, (), True),  # the first link
        (4, CHAIN, relay.SenderState(3, CHAIN), (), True),  # the next link
        (6, CHAIN, relay.SenderState(3, CHAIN), ("sequence_gap",), True),  # links 4, 5 missing
        (4, b"\x08" * 32, relay.SenderState(3, CHAIN), ("sequence_gap",), True),  # a broken hash
        (3, b"", FRESH, ("sequence_gap",), True),  # the chain starts late
        (2, CHAIN, relay.SenderState(3, CHAIN), ("sequence_gap",), False),  # an older link
    ],
)
def test_chain_step(
    sequence: int, prev_hash: bytes, state: relay.SenderState, flags: tuple[str, ...], head_moves: bool
) -> None:
    """Each link is checked against the sender's head; a gap is flagged and an older link keeps it."""
    header = make_header(sequence=sequence, prev_hash=prev_hash)
    got_flags, after = relay.chain_step(header, b"\x09" * 32, state)
    assert got_flags == flags
    assert after == (relay.SenderState(sequence, b"\x09" * 32) if head_moves else state)


def test_sequence_gap_is_flagged_but_still_forwarded() -> None:
    """A gap in the sender's chain is flagged in the outcome and the envelope is still delivered."""
    header = make_header(sequence=7, prev_hash=CHAIN)
    outcome = decide(sealed(header), sender=relay.SenderState(3, CHAIN))
    assert isinstance(outcome, relay.Forward)
    assert outcome.flags == ("sequence_gap",)
    assert outcome.sender_state.sequence == 7


def test_older_sequence_keeps_the_head() -> None:
    """A link older than the sender's head is forwarded with the head left where it was."""
    head = relay.SenderState(9, CHAIN)
    outcome = decide(sealed(make_header(sequence=4, prev_hash=CHAIN)), sender=head)
    assert isinstance(outcome, relay.Forward)
    assert outcome.sender_state == head


def test_wraps_beyond_the_grants_are_not_permitted() -> None:
    """A key wrapped for a category the agreement does not grant that recipient is quarantined."""
    header = make_header()
    grants = granted(header)
    assert "health" not in grants["KH.CWCC"]
    grants["KH.CWCC"] = grants["KH.CWCC"] | {"health"}
    outcome = decide(sealed(header, grants))
    assert isinstance(outcome, relay.Quarantine)
    assert outcome.code == "recipient_not_permitted"
    assert "KH.CWCC" in outcome.why


def test_wraps_for_an_unpermitted_recipient_are_not_permitted() -> None:
    """A section wrapped for a participant the agreement does not name is quarantined."""
    header = make_header()
    grants = {**granted(header), "KH.CCPCR": frozenset({"operational"})}
    outcome = decide(sealed(header, grants))
    assert isinstance(outcome, relay.Quarantine)
    assert outcome.code == "recipient_not_permitted"


def test_routing_refusal_is_quarantined_with_its_code() -> None:
    """The router re-evaluates the agreement: without the consent it needs, the event is refused."""
    header = make_header("nationality_verification.requested")
    outcome = decide(sealed(header), case=CaseState())
    assert isinstance(outcome, relay.Quarantine)
    assert outcome.code == "consent_missing"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "malformed"),
        (b"garbage, not an envelope", "malformed"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown_schema"),
    ],
)
def test_admit_of_garbage_is_quarantined(data: bytes, code: str) -> None:
    """Bytes that are not a sealed envelope become a Quarantine carrying the typed error's code."""
    outcome = relay.admit(data, world().context(NOW))
    assert isinstance(outcome, relay.Quarantine)
    assert (outcome.code, outcome.header) == (code, None)


def test_admit_of_a_tampered_envelope_is_a_bad_signature() -> None:
    """Flipping a byte of the signed body makes admit quarantine the record as bad_signature."""
    data = bytearray(sealed(make_header()))
    data[len(data) // 2] ^= 0x01
    outcome = relay.admit(bytes(data), world().context(NOW))
    assert isinstance(outcome, relay.Quarantine)
    assert outcome.code in {"bad_signature", "malformed"}


def test_admit_of_a_stale_envelope() -> None:
    """An envelope older than the context's maximum age is quarantined as stale."""
    data = sealed(make_header())
    outcome = relay.admit(data, replace(world().context(NOW), now=NOW + timedelta(days=8)))
    assert isinstance(outcome, relay.Quarantine)
    assert outcome.code == "stale"


def test_witness_hold_flag_is_applied_to_the_case_state() -> None:
    """A legal-status event's witness hold rides in the header and is set in the returned case state."""
    header = make_header("legal_proceedings.status_changed", witness_hold=True, handling_code="H1")
    outcome = decide(sealed(header), case=NGO_OK)
    assert isinstance(outcome, relay.Forward)
    assert outcome.case_state == CaseState(NGO_OK.consent, True)


def test_consent_flags_are_applied_to_the_case_state() -> None:
    """A (domestic) consent.withdrawn event removes its scopes from the returned case state."""
    header = make_header("consent.withdrawn", to=("TH",), consent_scopes=("ngo_sharing",), handling_code="H0")
    outcome = decide(sealed(header), case=NGO_OK)
    assert isinstance(outcome, relay.Forward)
    assert outcome.case_state.consent == NGO_OK.consent - {"ngo_sharing"}
