"""The monitor's in-process state: records by audit position, rebuilt and followed, figures cached."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from casebridge.core import avro
from casebridge.monitor import app, audit, synthetic
from casebridge.runtime.keystore import load_default_schemas

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SCHEMAS = load_default_schemas()


def encoded() -> list[bytes]:
    return [avro.encode(SCHEMAS, audit.AUDIT, r) for r in synthetic.demo_flow(START)]


def test_a_record_seen_by_the_rebuild_and_the_agent_counts_once() -> None:
    """Records are kept by audit position, so the start-up read and the live agent overlap harmlessly."""
    monitor = app.Monitor()
    values = encoded()
    for offset, value in enumerate(values):
        app.take(monitor, SCHEMAS, audit.AUDIT_TOPIC, 0, offset, value)
    for offset, value in enumerate(values[:3]):
        app.take(monitor, SCHEMAS, audit.AUDIT_TOPIC, 0, offset, value)
    assert monitor.count == len(values)
    assert app.figures_now(monitor, START).events == 6


def test_partitions_are_read_in_offset_order() -> None:
    """Records arriving out of offset order are handed to the figures in offset order."""
    monitor = app.Monitor()
    values = encoded()[:3]
    for offset in (2, 0, 1):
        app.take(monitor, SCHEMAS, audit.AUDIT_TOPIC, 1, offset, values[offset])
    assert [r["event_id"] for r in app.partitions(monitor)[0]] == [
        avro.decode(SCHEMAS, v, audit.AUDIT)["event_id"] for v in values]


def test_an_undecodable_record_is_counted_and_logged_by_code() -> None:
    """A value that is not an audit record is counted and logged with its code, not kept."""
    monitor = app.Monitor()
    with capture_logs() as logs:
        app.take(monitor, SCHEMAS, "TH.cb.audit", 2, 7, b"\xc3\x01junk-junk")
    assert (monitor.count, monitor.undecodable) == (0, 1)
    assert logs == [{"event": "audit_undecodable", "log_level": "warning", "topic": "TH.cb.audit",
                     "partition": 2, "offset": 7, "code": "unknown_schema"}]


def test_figures_are_recomputed_on_new_records_or_after_a_second() -> None:
    """Within a second and with no new record the cached figures are served again."""
    monitor = app.Monitor()
    values = encoded()
    app.take(monitor, SCHEMAS, audit.AUDIT_TOPIC, 0, 0, values[0])
    first = app.figures_now(monitor, START)
    assert app.figures_now(monitor, START + timedelta(milliseconds=500)) is first
    assert app.figures_now(monitor, START + timedelta(seconds=2)) is not first
    app.take(monitor, SCHEMAS, audit.AUDIT_TOPIC, 0, 1, values[1])
    assert app.figures_now(monitor, START + timedelta(seconds=2)).records == 2


def test_each_audit_topic_partition_is_its_own_sequence() -> None:
    """The same partition and offset on cb.audit and on a mirrored TH.cb.audit are two records."""
    monitor = app.Monitor()
    values = encoded()
    app.take(monitor, SCHEMAS, "TH.cb.audit", 0, 0, values[0])
    app.take(monitor, SCHEMAS, "KH.cb.audit", 0, 0, values[1])
    app.take(monitor, SCHEMAS, audit.AUDIT_TOPIC, 0, 0, values[2])
    assert monitor.count == 3
    assert [part[0]["event_id"] for part in app.partitions(monitor)] == [
        avro.decode(SCHEMAS, values[i], audit.AUDIT)["event_id"] for i in (1, 0, 2)]  # KH., TH., cb.audit


@pytest.mark.parametrize(("name", "audit_topic"), [
    ("cb.audit", True), ("TH.cb.audit", True), ("kh.cb.audit", True), ("REG-1.cb.audit", True),
    ("KH.TH.cb.audit", False), ("cb.audit.x", False), ("cb.auditx", False), ("TH.heartbeats", False),
    ("cb.xb.TH.KH", False), ("cb.out.TH.MSDHS", False),
])
def test_the_default_pattern_matches_the_audit_topic_and_its_mirrors(name: str, audit_topic: bool) -> None:
    """cb.audit and each MirrorMaker 2 copy <alias>.cb.audit are audit topics; nothing else is."""
    assert audit.matching([name], audit.AUDIT_PATTERN) == ([name] if audit_topic else [])


def test_a_literal_topic_matches_itself_only() -> None:
    """--topic names one topic exactly: its dots are not wildcards."""
    assert audit.matching(["cb.audit", "cbxaudit", "TH.cb.audit"], audit.literal("cb.audit")) == ["cb.audit"]
