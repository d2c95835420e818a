"""The monitor on real infrastructure: figures rebuilt from a Kafka topic, the page in real Chromium."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web as aiohttp_web

from casebridge.cli import monitor as monitor_cli
from casebridge.core import avro
from casebridge.monitor import app, audit, chains, figures, synthetic, web
from casebridge.runtime.kafka import ensure_topics, new_producer
from casebridge.runtime.keystore import load_default_schemas
from tests.support import KafkaHandle, fresh_name

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=5000",
    "--enable-logging=stderr",
    "--v=0",
    "--window-size=1280,1400",
)


async def publish(handle: KafkaHandle, topic: str, records: list[dict[str, Any]]) -> None:
    """Write the records as the router does: single-object encoded, keyed by case reference."""
    schemas = load_default_schemas()
    producer = new_producer(handle.settings)
    await producer.start()
    try:
        for record in records:
            key = str(record.get("case_ref") or "").encode()
            await producer.send_and_wait(topic, avro.encode(schemas, audit.AUDIT, record), key=key)
    finally:
        await producer.stop()


@pytest.mark.kafka
async def test_the_monitor_rebuilds_its_figures_from_the_audit_topic(kafka: KafkaHandle) -> None:
    """Audit records on a 3-partition topic are read back whole: chains verify, corridors count right."""
    topic = fresh_name("audit")
    await ensure_topics(kafka.settings, [topic], partitions=3)
    records = synthetic.demo_flow(START)
    await publish(kafka, topic, records)
    log = await audit.read_topic(kafka.settings, load_default_schemas(), topic)
    assert (sum(map(len, log.partitions)), log.undecodable) == (len(records), ())
    assert audit.verdict(log, chains.check(log.partitions)) == 0
    monitor, stop = app.Monitor(), threading.Event()
    follower = app.follow_audit(kafka.settings, load_default_schemas(), monitor, topic, stop)
    try:
        deadline = time.monotonic() + 60
        while monitor.count < len(records) and time.monotonic() < deadline:  # until it has read them all
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        follower.join(10)
    assert monitor.count == len(records)
    got = app.figures_now(monitor, START + timedelta(minutes=5))
    assert {c.name: c.events for c in got.corridors} == {"KH-TH": 4, "LA-TH": 1, "TH-TH": 1}


@pytest.mark.kafka
async def test_the_monitor_follows_every_mirrored_audit_topic(kafka: KafkaHandle,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """TH's and KH's audit topics, one created after the follower started, are read whole: the event
    that crossed the corridor counts once and the corridor's forward is matched with its delivery."""
    monkeypatch.setattr(app, "DISCOVER", 0.5)
    run = uuid.uuid4().hex[:8]
    th, kh = f"TH{run}.cb.audit", f"KH{run}.cb.audit"
    pattern = rf"(?:TH|KH){run}\.cb\.audit"
    w = synthetic.Writer(START)
    w.crossing("TH.MSDHS", "referral.sent", ("TH.RTP", "KH.MOSVY"), 0, arrive_s={"KH": 1.5})
    await ensure_topics(kafka.settings, [th], partitions=3)
    await publish(kafka, th, w.audits["TH.cb.audit"])
    monitor, stop = app.Monitor(), threading.Event()
    follower = app.follow_audit(kafka.settings, load_default_schemas(), monitor, pattern, stop)
    try:
        await until(lambda: monitor.count == 2)
        await ensure_topics(kafka.settings, [kh], partitions=3)
        await publish(kafka, kh, w.audits["KH.cb.audit"])
        await until(lambda: monitor.count == 3)
    finally:
        stop.set()
        follower.join(10)
    assert {topic for topic, _ in monitor.records} == {th, kh}
    for got in (app.figures_now(monitor, START + timedelta(minutes=5)),
                await app.figures_from_topic(kafka.settings, load_default_schemas(), START, pattern)):
        assert (got.events, got.deliveries, got.records) == (1, 2, 3)
        assert [(c.name, c.forwarded, c.delivered, c.mirror_lag.p50_ms) for c in got.crossings] == [
            ("TH->KH", 1, 1, 1500.0)]


async def until(ready: Any, timeout: float = 60.0) -> None:
    """Wait until ``ready()`` holds (the follower reads in its own thread)."""
    async with asyncio.timeout(timeout):
        while not ready():
            await asyncio.sleep(0.2)


async def chromium(*args: str) -> tuple[str, str]:
    """Run headless Chromium with ``args``; its stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace"), err.decode(errors="replace")


async def test_the_page_shows_the_corridor_counts_in_chromium() -> None:
    """The page loads without console errors and shows KH-TH with 4 events; a screenshot is kept."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    figs = figures.compute([synthetic.demo_flow(START)], START + timedelta(minutes=5))
    runner = aiohttp_web.AppRunner(web.http_app(lambda: figs))
    await runner.setup()
    site = aiohttp_web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # bound to port 0: ask the socket
    url = f"http://127.0.0.1:{port}/"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        dom, log = await chromium("--dump-dom", url)
        await chromium(f"--screenshot={ARTIFACTS / 'monitor-page.png'}", url)
    finally:
        await runner.cleanup()
    label = re.search(r'<text [^>]*id="corridor-KH-TH"[^>]*>([^<]*)</text>', dom)
    assert label is not None and label[1] == "KH\u2013TH: 4"
    assert '<td>KH\u2013TH</td><td class="num">4</td>' in dom
    assert "live · figures of" in dom
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert [line for line in console if re.search(r"error|uncaught", line, re.IGNORECASE)] == []
    assert (ARTIFACTS / "monitor-page.png").stat().st_size > 10_000


async def test_the_page_shows_the_corridor_mirrors_of_a_federation() -> None:
    """With a federation's audit records the page lists each corridor direction with its counts."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    w = synthetic.Writer(START)
    w.crossing("TH.MSDHS", "referral.sent", ("TH.RTP", "KH.MOSVY"), 0, arrive_s={"KH": 1.5})
    w.crossing("TH.MSDHS", "referral.sent", ("KH.MOSVY",), 60, arrive_s={"KH": None})
    figs = figures.compute(w.partitions(), START + timedelta(minutes=5))
    runner = aiohttp_web.AppRunner(web.http_app(lambda: figs))
    await runner.setup()
    site = aiohttp_web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # bound to port 0: ask the socket
    try:
        dom, _ = await chromium("--dump-dom", f"http://127.0.0.1:{port}/")
    finally:
        await runner.cleanup()
    assert '<section id="mirrors">' in dom
    assert ('<td>TH\u2192KH</td><td class="num">2</td><td class="num">1</td><td class="num">1</td>'
            '<td class="num">4 min</td><td class="num">0</td><td class="num">1.50 s</td>') in dom


@pytest.mark.kafka
async def test_a_missing_audit_topic_reads_as_empty(kafka: KafkaHandle) -> None:
    """Verifying a topic that does not exist yet finds nothing rather than hanging or crashing."""
    log = await audit.read_topic(kafka.settings, load_default_schemas(), fresh_name("absent"))
    assert log == audit.AuditLog((), ())


WORKER = (
    "import argparse, sys; from casebridge.cli import monitor; p = argparse.ArgumentParser(); "
    "monitor.register(p.add_subparsers(required=True)); a = p.parse_args(); sys.exit(a.func(a))"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def figures_when(url: str, ready: Any, timeout: float = 90.0) -> dict[str, Any]:
    """Poll ``url`` until ``ready(doc)`` holds (the worker needs a while to join and catch up)."""
    doc: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
        while not ready(doc):
            await asyncio.sleep(0.5)
            try:
                async with session.get(url) as response:
                    doc = await response.json()
            except aiohttp.ClientError:
                continue
    return doc


@pytest.mark.kafka
async def test_the_monitor_worker_rebuilds_then_follows_the_topic(kafka: KafkaHandle, tmp_path: Path) -> None:
    """``monitor run`` serves what was on the topic before it started and what arrives after."""
    topic = fresh_name("audit")
    await ensure_topics(kafka.settings, [topic], partitions=3)
    records = synthetic.demo_flow(START)
    await publish(kafka, topic, records[:8])
    port = free_port()
    env = {**os.environ, **kafka.env(), "CASEBRIDGE_HOME": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        "monitor",
        "run",
        "--port",
        str(port),
        "--topic",
        topic,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api/figures"
    try:
        early = await figures_when(url, lambda d: d.get("totals", {}).get("records") == 8)
        await publish(kafka, topic, records[8:])
        late = await figures_when(url, lambda d: d.get("totals", {}).get("records") == len(records))
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=60)
    assert early["totals"]["records"] == 8
    assert {c["corridor"]: c["events"] for c in late["corridors"]} == {"KH-TH": 4, "LA-TH": 1, "TH-TH": 1}
    assert late["quarantine"] == {"bad_signature": 1, "consent_missing": 1}


@pytest.mark.kafka
def test_audit_verify_reads_the_topic_and_fails_on_a_forged_record(
    kafka: KafkaHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``audit verify --topic`` exits 0 on the router's records and 1 once a forged one is added."""
    topic = fresh_name("audit")
    asyncio.run(ensure_topics(kafka.settings, [topic], partitions=3))
    records = synthetic.demo_flow(START)
    asyncio.run(publish(kafka, topic, records))
    for name, value in kafka.env().items():
        monkeypatch.setenv(name, value)
    assert run_cli(["audit", "verify", "--topic", topic]) == 0
    forged = dict(records[0], envelope_hash=bytes(32), offset=40, event_id="ev-forged")
    asyncio.run(publish(kafka, topic, [forged]))
    assert run_cli(["audit", "verify", "--topic", topic]) == 1
    assert "TH.MSDHS/0: fork (6 links, last sequence 5)" in capsys.readouterr().out


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    monitor_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
