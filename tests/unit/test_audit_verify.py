"""``casebridge audit verify``: every sender's hash chain and sequence numbers, from audit records."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from casebridge.cli import monitor as monitor_cli
from casebridge.core import avro
from casebridge.monitor import audit, chains, synthetic
from casebridge.runtime.keystore import load_default_schemas

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def chain(n: int = 5, sender: str = "TH.MSDHS") -> list[dict[str, Any]]:
    """``n`` delivered links of one sender, in source order."""
    w = synthetic.Writer(START)
    for i in range(n):
        w.event(sender, "referral.sent", ("KH.MOSVY",), i)
    return w.records


def status(records: list[dict[str, Any]], sender: str = "TH.MSDHS") -> chains.ChainStatus:
    return next(s for s in chains.check([records]) if s.sender == sender)


def kinds(s: chains.ChainStatus) -> list[tuple[str, int]]:
    return [(f.kind, f.sequence) for f in s.findings]


def test_an_intact_chain_is_ok() -> None:
    """Five links in order, each naming its predecessor's hash, verify with no finding."""
    s = status(chain())
    assert (s.status, s.links, s.last_sequence, s.findings) == ("ok", 5, 5, ())


def test_a_removed_record_is_a_gap_at_its_sequence() -> None:
    """Dropping sequence 3 is reported as a gap at 3 (the link after it cannot be checked)."""
    records = chain()
    del records[2]
    assert kinds(status(records)) == [("gap", 3)]


def test_a_reordered_record_is_reported_with_its_position() -> None:
    """Sequence 3 published after sequence 4 (a later source offset) is a reorder at 3, at its position."""
    records = chain()
    records[2]["offset"], records[3]["offset"] = records[3]["offset"], records[2]["offset"]
    records[2], records[3] = records[3], records[2]  # the router audits in source order
    s = status(records)
    assert s.status == "reorder"
    assert [(f.kind, f.sequence, f.position) for f in s.findings] == [("reorder", 3, "cb.out.TH.MSDHS/0@3")]


def test_records_rearranged_in_the_audit_log_are_out_of_order() -> None:
    """Swapping two lines of the audit log puts a sender's source offsets backwards: out_of_order."""
    records = chain()
    records[1], records[2] = records[2], records[1]
    assert kinds(status(records)) == [("out_of_order", 2)]


def test_a_forged_envelope_hash_breaks_the_next_link() -> None:
    """An altered envelope hash at 2 no longer matches the prev_hash of 3: a broken link at 3."""
    records = chain()
    records[1]["envelope_hash"] = bytes(32)
    assert kinds(status(records)) == [("broken_link", 3)]


def test_a_forged_prev_hash_is_a_broken_link_at_that_record() -> None:
    """An altered prev_hash at 4 does not name the hash of 3: a broken link at 4."""
    records = chain()
    records[3]["prev_hash"] = b"\x01" * 32
    assert kinds(status(records)) == [("broken_link", 4)]


def test_a_first_link_with_a_predecessor_is_broken() -> None:
    """Sequence 1 must carry an empty prev_hash."""
    records = chain(2)
    records[0]["prev_hash"] = b"\x02" * 32
    assert kinds(status(records)) == [("broken_link", 1)]


def test_two_hashes_at_one_sequence_are_a_fork() -> None:
    """A second envelope claiming sequence 2 with another hash is a fork at 2."""
    records = chain(3)
    twin = dict(records[1], envelope_hash=b"\x03" * 32, offset=7, event_id="ev-twin")
    s = status([*records, twin])
    assert s.status == "fork"
    assert ("fork", 2) in kinds(s)


def test_redeliveries_replays_and_unchained_records_are_not_findings() -> None:
    """A router redelivery, a refused replay, deadline alerts and unverifiable records pass."""
    w = synthetic.Writer(START)
    first = w.event("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 0)
    w.event("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 1)
    replay = dict(first, outcome="quarantined", code="replay", envelope_hash=None, offset=9)
    w.alert("sla.breached", first, ("KH.MOI",), 5)
    w.unverifiable("cb.out.TH.MSDHS", "bad_signature", 6)
    records = [*w.records, dict(first), replay]
    assert [(s.sender, s.status, s.links) for s in chains.check([records])] == [("TH.MSDHS", "ok", 2)]


def test_a_quarantined_link_keeps_its_sequence_number() -> None:
    """A refused record consumed its sequence: no gap, and the link after it is not reported broken."""
    w = synthetic.Writer(START)
    w.event("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 0)
    w.event("TH.MSDHS", "origin.notified", ("KH.MOSVY",), 1, code="consent_missing")
    w.event("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 2)
    assert status(w.records).findings == ()


def test_chains_are_checked_per_sender_across_audit_partitions() -> None:
    """A sender's links split over audit partitions still form one chain; other senders are apart."""
    records = chain(4) + chain(2, "KH.MOSVY")
    statuses = chains.check([records[0::2], records[1::2]])
    assert [(s.sender, s.status, s.links) for s in statuses] == [("KH.MOSVY", "ok", 2), ("TH.MSDHS", "ok", 4)]


def federated(w: synthetic.Writer) -> None:
    """TH.MSDHS sends to a local and a KH recipient, to KH only, then to a local recipient only."""
    w.crossing("TH.MSDHS", "referral.sent", ("TH.RTP", "KH.MOSVY"), 0)
    w.crossing("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 1)
    w.crossing("TH.MSDHS", "referral.sent", ("TH.RTP",), 2)


def test_a_forwarded_record_is_a_link_of_the_senders_chain() -> None:
    """An envelope routed only to another country is audited as forwarded: a link, so no gap at 2."""
    w = synthetic.Writer(START)
    federated(w)
    statuses = chains.check(w.partitions())
    assert [(s.sender, s.status, s.links, s.last_sequence) for s in statuses] == [("TH.MSDHS", "ok", 3, 3)]


def test_the_delivered_and_forwarded_records_of_one_envelope_are_one_link() -> None:
    """Delivered to a local recipient and forwarded abroad at one outbox position: one link, no fork."""
    w = synthetic.Writer(START)
    w.crossing("TH.MSDHS", "referral.sent", ("TH.RTP", "KH.MOSVY", "LA.MLSW"), 0)
    outcomes = sorted(r["outcome"] for r in w.audits["TH.cb.audit"])
    assert outcomes == ["delivered", "forwarded", "forwarded"]
    assert [(s.status, s.links) for s in chains.check(w.partitions())] == [("ok", 1)]


def test_a_forged_forward_is_a_fork() -> None:
    """A forwarded record claiming a sequence number with another hash is checked like a delivery."""
    w = synthetic.Writer(START)
    federated(w)
    forward = next(r for r in w.audits["TH.cb.audit"] if r["outcome"] == "forwarded")
    forged = dict(forward, envelope_hash=b"\x05" * 32, offset=30)
    assert ("fork", 1) in kinds(status([*w.records, forged]))


def test_records_of_a_corridor_topic_are_not_links() -> None:
    """The destination's delivered and quarantined records of cb.xb.TH.KH are left out of TH's chain,
    even with hashes and positions that would otherwise fork or break it."""
    w = synthetic.Writer(START)
    federated(w)
    w.crossing("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 3, refuse="sender_topic_mismatch")
    arrived = next(r for r in w.audits["KH.cb.audit"] if r["outcome"] == "delivered")
    odd = dict(arrived, envelope_hash=b"\x06" * 32, prev_hash=b"\x07" * 32, sequence=9, offset=0)
    assert all(chains.link_of(r) is None for r in [*w.audits["KH.cb.audit"], odd])
    assert [(s.status, s.links) for s in chains.check([*w.partitions(), [odd]])] == [("ok", 4)]


def in_partition(records: list[dict[str, Any]], partition: int, offset: int = 0) -> list[dict[str, Any]]:
    """The records as if their envelopes sat in ``partition`` of the outbox, from ``offset`` on."""
    return [dict(r, partition=partition, offset=offset + n) for n, r in enumerate(records)]


def test_each_partition_of_an_outbox_is_its_own_chain() -> None:
    """Two chains of one sender, each starting at sequence 1 in its own partition, interleaved in
    the audit log, verify separately: no fork for the repeated sequence numbers, no reorder."""
    left, right = in_partition(chain(3), 0), in_partition(chain(2), 4)
    interleaved = [left[0], right[0], left[1], right[1], left[2]]
    statuses = chains.check([interleaved])
    assert [(s.sender, s.partition, s.status, s.links, s.last_sequence) for s in statuses] == [
        ("TH.MSDHS", 0, "ok", 3, 3), ("TH.MSDHS", 4, "ok", 2, 2)
    ]


def test_a_finding_names_the_partition_of_its_chain() -> None:
    """A gap in partition 2's chain is reported for partition 2 only; partition 0 stays ok."""
    broken = in_partition(chain(4), 2)
    del broken[1]
    statuses = {s.partition: s for s in chains.check([in_partition(chain(2), 0) + broken])}
    assert (statuses[0].status, statuses[2].status) == ("ok", "gap")
    assert [(f.partition, f.kind, f.sequence) for f in statuses[2].findings] == [(2, "gap", 2)]


def test_a_file_round_trip_keeps_every_field(tmp_path: Path) -> None:
    """Records written as JSON lines read back equal, bytes and times included."""
    records = synthetic.demo_flow(START)
    path = tmp_path / "audit.jsonl"
    assert audit.write_file(path, audit.AuditLog((tuple(records),), ())) == len(records)
    assert audit.read_file(path).partitions == (tuple(records),)


def test_topic_values_are_decoded_with_the_audit_schema() -> None:
    """Single-object encoded audit records decode per partition; a foreign value is undecodable."""
    schemas = load_default_schemas()
    values = [avro.encode(schemas, audit.AUDIT, r) for r in synthetic.demo_flow(START)]
    log = audit.decode_all(schemas, [(0, 0, values[0]), (1, 0, values[1]), (1, 1, b"junk")])
    assert [len(p) for p in log.partitions] == [1, 1]
    assert log.undecodable == ("1@1: malformed",)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    monitor_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.mark.parametrize(("tamper", "exit_code", "expected"), [
    (lambda rs: None, 0, "TH.MSDHS/0: ok (5 links, last sequence 5)"),
    (lambda rs: rs.pop(2), 1, "gap at sequence 3"),
    (lambda rs: rs[1].update(envelope_hash=bytes(32)), 1, "broken_link at sequence 3 cb.out.TH.MSDHS/0@2"),
])
def test_the_command_exits_1_on_any_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             tamper: Any, exit_code: int, expected: str) -> None:
    """``audit verify --file`` prints each sender and finding and exits 0 only when all is clean."""
    records = chain()
    tamper(records)
    path = tmp_path / "audit.jsonl"
    audit.write_file(path, audit.AuditLog((tuple(records),), ()))
    assert run_cli(["audit", "verify", "--file", str(path)]) == exit_code
    assert expected in capsys.readouterr().out


def test_an_unreadable_line_fails_verification(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A line that is not an audit record is reported and makes the check fail."""
    path = tmp_path / "audit.jsonl"
    audit.write_file(path, audit.AuditLog((tuple(chain(2)),), ()))
    path.write_text(path.read_text() + "not json\n")
    assert run_cli(["audit", "verify", "--file", str(path), "--json"]) == 1
    assert '"line 3: JSONDecodeError"' in capsys.readouterr().out
