"""The monitor's in-process state: records by audit position, rebuilt and followed, figures cached."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
        app.take(monitor, SCHEMAS, 0, offset, value)
    for offset, value in enumerate(values[:3]):
        app.take(monitor, SCHEMAS, 0, offset, value)
    assert monitor.count == len(values)
    assert app.figures_now(monitor, START).events == 6


def test_partitions_are_read_in_offset_order() -> None:
    """Records arriving out of offset order are handed to the figures in offset order."""
    monitor = app.Monitor()
    values = encoded()[:3]
    for offset in (2, 0, 1):
        app.take(monitor, SCHEMAS, 1, offset, values[offset])
    assert [r["event_id"] for r in app.partitions(monitor)[0]] == [
        avro.decode(SCHEMAS, v, audit.AUDIT)["event_id"] for v in values]


def test_an_undecodable_record_is_counted_and_logged_by_code() -> None:
    """A value that is not an audit record is counted and logged with its code, not kept."""
    monitor = app.Monitor()
    with capture_logs() as logs:
        app.take(monitor, SCHEMAS, 2, 7, b"\xc3\x01junk-junk")
    assert (monitor.count, monitor.undecodable) == (0, 1)
    assert logs == [{"event": "audit_undecodable", "log_level": "warning", "partition": 2, "offset": 7,
                     "code": "unknown_schema"}]


def test_figures_are_recomputed_on_new_records_or_after_a_second() -> None:
    """Within a second and with no new record the cached figures are served again."""
    monitor = app.Monitor()
    values = encoded()
    app.take(monitor, SCHEMAS, 0, 0, values[0])
    first = app.figures_now(monitor, START)
    assert app.figures_now(monitor, START + timedelta(milliseconds=500)) is first
    assert app.figures_now(monitor, START + timedelta(seconds=2)) is not first
    app.take(monitor, SCHEMAS, 0, 1, values[1])
    assert app.figures_now(monitor, START + timedelta(seconds=2)).records == 2
