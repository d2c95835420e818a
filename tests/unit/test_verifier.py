"""The router's signature checks in a child process (``runtime.verifier``) and the lazy admission
that uses them (``router.loop.admitted``): the child's verdicts are libsodium's, a verdict is used
only for exactly the bytes it was made for, and without a child every check is made in the loop."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest

from casebridge.core import avro, relay, sealing
from casebridge.core.keys import signature_valid
from casebridge.router.loop import admitted
from casebridge.runtime import verifier as verifier_module
from casebridge.runtime.verifier import HEAD, LENGTH, Verifier, serve
from tests.unit.test_relay import NOW, make_header, sealed, world


@pytest.fixture
def verifier() -> Iterator[Verifier]:
    checker = Verifier()
    yield checker
    checker.close()


def context() -> relay.Context:
    return world().context(NOW)


def triple(data: bytes) -> tuple[bytes, bytes, bytes]:
    parts = sealing.signed_parts(data, world().directory, world().schemas)
    assert parts is not None
    return parts


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


def test_the_child_answers_each_triple_as_libsodium_does(verifier: Verifier) -> None:
    """Valid, a flipped message byte, a flipped signature byte: 1, 0, 0."""
    key, sig, msg = triple(sealed(make_header()))
    triples = [(key, sig, msg), (key, sig, flipped(msg, 10)), (key, flipped(sig, 3), msg)]
    ticket = verifier.submit(triples)
    assert ticket is not None
    assert verifier.result(ticket, len(triples)) == bytes([1, 0, 0])
    assert [signature_valid(k, s, m) for k, s, m in triples] == [True, False, False]


@pytest.mark.parametrize("cut", [(31, 64), (32, 63), (33, 64), (32, 65)])
def test_only_keys_and_signatures_of_the_right_size_are_sent(verifier: Verifier,
                                                             cut: tuple[int, int]) -> None:
    """The pipe's framing assumes them; a record with any other size is checked in the loop."""
    key, sig, msg = triple(sealed(make_header()))
    with pytest.raises(ValueError):
        verifier.submit([((key * 2)[:cut[0]], (sig * 2)[:cut[1]], msg)])


def test_an_answer_to_an_earlier_request_is_skipped(verifier: Verifier) -> None:
    """A batch dropped before its verdicts were read (an aborted transaction): the next request's
    answer is still found, in order."""
    key, sig, msg = triple(sealed(make_header()))
    first = verifier.submit([(key, sig, msg)])
    second = verifier.submit([(key, sig, flipped(msg, 5)), (key, sig, msg)])
    assert first is not None and second is not None
    assert verifier.result(second, 2) == bytes([0, 1])


def test_a_dead_child_gives_no_verdicts_and_is_not_restarted_at_once(verifier: Verifier) -> None:
    key, sig, msg = triple(sealed(make_header()))
    assert verifier.submit([(key, sig, msg)]) is not None
    assert verifier.child is not None
    verifier.child.kill()
    verifier.child.wait()
    assert verifier.submit([(key, sig, msg)]) is None  # the loop checks these itself
    assert verifier.child is None and verifier.failed_at is not None


def test_a_request_to_a_former_child_gets_no_verdicts_from_its_successor(verifier: Verifier) -> None:
    """A child that died mid-batch and was started again: the former child's pending request is
    answered None at once (checked in the loop), the new child's requests normally."""
    key, sig, msg = triple(sealed(make_header()))
    former = verifier.submit([(key, sig, msg)])
    assert verifier.child is not None
    verifier.child.kill()
    verifier.child.wait()
    verifier.running()  # noticed dead: given up
    verifier.failed_at = None  # and started again at once
    current = verifier.submit([(key, sig, flipped(msg, 1)), (key, sig, msg)])
    assert former is not None and current is not None and current > former
    began = time.monotonic()
    assert verifier.result(former, 1) is None
    assert time.monotonic() - began < 1.0  # not after the answer timeout
    assert verifier.result(current, 2) == bytes([0, 1])


def test_a_late_child_is_given_up(verifier: Verifier, monkeypatch: pytest.MonkeyPatch) -> None:
    key, sig, msg = triple(sealed(make_header()))
    ticket = verifier.submit([(key, sig, msg)])
    monkeypatch.setattr(verifier_module, "ANSWER_TIMEOUT", 0.0)
    assert verifier.result(ticket, 1) is None
    assert verifier.child is None


def test_the_child_ends_at_the_end_of_its_input() -> None:
    """``serve`` answers what it read and returns 0 at EOF (its parent closed the pipe or died)."""
    key, sig, msg = triple(sealed(make_header()))
    request = HEAD.pack(7, 2) + b"".join(k + s + LENGTH.pack(len(m)) + m
                                         for k, s, m in [(key, sig, msg), (key, sig, msg[:-1])])
    out = io.BytesIO()
    assert serve(io.BytesIO(request), out) == 0
    assert out.getvalue() == HEAD.pack(7, 2) + bytes([1, 0])


def test_admitted_matches_admit_record_by_record(verifier: Verifier) -> None:
    """Valid envelopes, a forged one (a flipped byte in the signed body), garbage and an empty value,
    over more than one request: the lazy admission with the child equals relay.admit in the loop."""
    ctx = context()
    values = [sealed(make_header(case_ref=f"CB-V-{n}")) for n in range(40)]
    values[3] = flipped(values[3], len(values[3]) - 40)
    values[20] = b"not an envelope"
    values[33] = b""
    values[35] = sealing_with_signature(values[35], b"\x01" * 63)  # a signature one byte short
    with_child = list(admitted(values, ctx, verifier))
    assert verifier.child is not None  # the child did the checks
    expected = [relay.admit(v, ctx) for v in values]
    assert with_child == expected
    assert isinstance(with_child[3], relay.Quarantine) and with_child[3].code == "bad_signature"
    assert sum(isinstance(r, sealing.VerifiedEnvelope) for r in with_child) == 36


def sealing_with_signature(data: bytes, signature: bytes) -> bytes:
    """The same envelope with another signature of any size (re-encoded as a Sealed record)."""
    schemas = world().schemas
    outer = avro.decode(schemas, data, sealing.SEALED)
    return avro.encode(schemas, sealing.SEALED, {**outer, "signature": signature})


def test_admitted_without_a_child_checks_in_the_loop(verifier: Verifier) -> None:
    ctx = context()
    values = [sealed(make_header()), flipped(sealed(make_header()), 200)]
    verifier.failed_at = float("inf")  # no child may be started
    results = list(admitted(values, ctx, verifier))
    assert verifier.child is None
    assert results == [relay.admit(v, ctx) for v in values]


def test_a_verdict_is_used_only_for_the_bytes_it_was_made_for() -> None:
    """A 'verifies' made for other bytes is ignored: the check is made again, and fails."""
    ctx = context()
    good = sealed(make_header())
    forged = flipped(good, len(good) - 40)
    key, sig, msg = triple(good)
    with pytest.raises(sealing.BadSignature):
        sealing.verify(forged, ctx.directory, ctx.now, ctx.max_age, schemas=ctx.schemas,
                       checked=(key, sig, msg, True))
    refused = relay.admit(good, ctx, (key, sig, msg, False))  # its own verdict counts
    assert isinstance(refused, relay.Quarantine) and refused.code == "bad_signature"
