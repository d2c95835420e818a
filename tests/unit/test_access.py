"""The Kafka access policy derived from the directory (pure; the broker check is in integration)."""

from __future__ import annotations

from pathlib import Path

from casebridge.core import access
from casebridge.localkafka import broker

PEOPLE = ["TH.MSDHS", "KH.MOSVY", "REG.SECRETARIAT", "REG.ROUTER", "REG.DEADLINES"]


def topics_with(principal: str, operation: str) -> set[tuple[str, str]]:
    return {
        (g.name, g.pattern)
        for g in access.grants_for(PEOPLE)
        if g.principal == principal and g.resource == "topic" and g.operation == operation
    }


def test_a_participant_writes_only_its_outbox_and_reads_only_its_inbox() -> None:
    """TH.MSDHS may write cb.out.TH.MSDHS, read cb.in.TH.MSDHS, and nothing else of the network."""
    assert {n for n, _ in topics_with("TH.MSDHS", "write") if n.startswith("cb.")} == {"cb.out.TH.MSDHS"}
    assert {n for n, _ in topics_with("TH.MSDHS", "read") if n.startswith("cb.")} == {
        "cb.in.TH.MSDHS",
        "cb.directory",
        "cb.agreements",
    }


def test_the_router_reads_every_outbox_and_writes_every_inbox_by_prefix() -> None:
    """The router's rights are prefixed on cb.out. and cb.in., plus audit and quarantine."""
    assert ("cb.out.", "prefixed") in topics_with(access.ROUTER, "read")
    assert {("cb.in.", "prefixed"), ("cb.audit", "literal"), ("cb.quarantine", "literal")} <= topics_with(
        access.ROUTER, "write"
    )


def test_the_monitor_reads_the_audit_only() -> None:
    """REG.MONITOR reads cb.audit and writes nothing of the network."""
    assert {n for n, _ in topics_with(access.MONITOR, "read") if n.startswith("cb.")} == {"cb.audit"}
    assert {n for n, _ in topics_with(access.MONITOR, "write") if n.startswith("cb.")} == set()


def test_only_the_secretariat_writes_the_directory_and_agreements() -> None:
    """cb.directory and cb.agreements are written by REG.SECRETARIAT alone."""
    writers = {
        g.principal
        for g in access.grants_for(PEOPLE)
        if g.name in ("cb.directory", "cb.agreements") and g.operation == "write"
    }
    assert writers == {"REG.SECRETARIAT"}


def test_removing_a_participant_removes_every_grant_it_had() -> None:
    """Without KH.MOSVY in the directory no rule names it."""
    assert not [
        g for g in access.grants_for([p for p in PEOPLE if p != "KH.MOSVY"]) if g.principal == "KH.MOSVY"
    ]


def test_a_secured_broker_denies_by_default_over_scram(tmp_path: Path) -> None:
    """--secure gives a SASL/SCRAM-SHA-512 listener, the StandardAuthorizer and no default allow."""
    spec = broker.BrokerSpec(state_dir=tmp_path, cache_dir=tmp_path, pom=tmp_path / "pom.xml", secure=True)
    props = dict(line.split("=", 1) for line in broker.server_properties(spec, 1).splitlines())
    assert props["listeners"].startswith("SASL_PLAINTEXT://127.0.0.1:9092")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert (tmp_path / "admin.secret").stat().st_mode & 0o077 == 0
