"""What the fault tests share: a 3-node secured cluster with a CaseBridge network on it, a sender
that posts events while faults happen, and the figures read back from the nodes' stores and the wire.

The truth is read where it lives: what the sender's outbox saw acknowledged (status past
``queued``), what each recipient stored (its inbox table, in arrival order) and what travelled on
the topics (records counted by the digest of their bytes, so a duplicate is the same bytes twice).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from casebridge.demo import localnet, scenario
from casebridge.localkafka import broker
from casebridge.node.app import node_db
from casebridge.runtime.kafka import new_consumer
from casebridge.runtime.settings import Settings

SENDER = "TH.MSDHS"
RECIPIENT = "KH.MOSVY"
NODES = (SENDER, RECIPIENT)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Cluster:
    spec: broker.BrokerSpec
    settings: Settings
    net: localnet.LocalNet


def plan(case_ref: str, n: int) -> dict[str, Any]:
    """A return plan from TH.MSDHS to Cambodia; ``n`` is carried in its reference."""
    return scenario.return_plan(case_ref, n)


@dataclass
class Sender:
    """Posts ``count`` events to the sender node's API from a few threads; never stops on a fault."""

    net: localnet.LocalNet
    prefix: str
    count: int
    cases: int = 50
    threads: int = 3
    pause: float = 0.0  # seconds each thread waits between posts (0: as fast as the node answers)
    accepted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # event id -> recipients
    refused: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    finished: float = 0.0
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    @property
    def posted(self) -> int:
        with self._lock:
            return len(self.accepted) + sum(self.refused.values())

    def start(self) -> Sender:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the sender posted {self.posted}/{self.count} events in {timeout:.0f}s")

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.count:
                return None
            self._next += 1
            return self._next - 1

    def _post(self) -> None:
        while (n := self._take()) is not None:
            doc = plan(f"{self.prefix}-{n % self.cases}", n)
            if self.pause:
                time.sleep(self.pause)
            status, body = self.net.call(SENDER, "POST", "/events", doc)
            with self._lock:
                if status == 202:
                    self.accepted[body["event_id"]] = tuple(body["recipients"])
                else:
                    self.refused[f"{status}:{body.get('code')}"] += 1

    def _run(self) -> None:
        with ThreadPoolExecutor(self.threads) as pool:
            for future in [pool.submit(self._post) for _ in range(self.threads)]:
                future.result()
        self.finished = time.monotonic()



def _read(settings: Settings, participant: str, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    path = node_db(settings.home, participant)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, tuple(args)).fetchall()
    finally:
        conn.close()


def acknowledged(settings: Settings, ids: Iterable[str]) -> set[str]:
    """Event ids the sender's outbox saw acknowledged by the broker (status past ``queued``)."""
    wanted = set(ids)
    rows = _read(settings, SENDER, "SELECT event_id FROM outbox WHERE status NOT IN ('queued', 'rejected')")
    return {r[0] for r in rows} & wanted


def outbox_digests(settings: Settings, ids: Iterable[str]) -> dict[str, str]:
    """sha256 of each sealed envelope -> its event id, as the sender queued it."""
    wanted = set(ids)
    rows = _read(settings, SENDER, "SELECT event_id, envelope FROM outbox WHERE envelope IS NOT NULL")
    return {hashlib.sha256(bytes(r[1])).hexdigest(): r[0] for r in rows if r[0] in wanted}


def sequences(settings: Settings, ids: Iterable[str]) -> dict[str, int]:
    wanted = set(ids)
    rows = _read(settings, SENDER, "SELECT event_id, sequence FROM outbox WHERE sequence IS NOT NULL")
    return {r[0]: int(r[1]) for r in rows if r[0] in wanted}


def stored(settings: Settings, participant: str, ids: Iterable[str]) -> list[tuple[str, str]]:
    """(event id, case ref) of the given events in the recipient's inbox, in arrival order."""
    wanted = set(ids)
    rows = _read(settings, participant, "SELECT event_id, case_ref FROM inbox ORDER BY rowid")
    return [(r[0], r[1]) for r in rows if r[0] in wanted]


def delivered_receipts(settings: Settings, ids: Iterable[str]) -> set[str]:
    """Event ids for which the sender holds a signed ``delivered`` receipt from the recipient."""
    wanted = set(ids)
    sql = "SELECT event_id FROM receipts WHERE kind = 'delivered' AND participant = ?"
    rows = _read(settings, SENDER, sql, [RECIPIENT])
    return {r[0] for r in rows} & wanted


def drain(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check`` holds; TimeoutError after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not drained within {timeout:.0f}s")
        time.sleep(1.0)
    return time.monotonic() - start


async def _wire(settings: Settings, topics: list[str], digests: set[str]) -> Counter[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **settings.kafka_auth)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    parts = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    consumer = new_consumer(settings, group_id=None)
    await consumer.start()
    seen: Counter[str] = Counter()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        async with asyncio.timeout(300):
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for records in batch.values():
                    for record in records:
                        digest = hashlib.sha256(record.value or b"").hexdigest()
                        if digest in digests:
                            seen[digest] += 1
    finally:
        await consumer.stop()
    return seen


def wire_copies(settings: Settings, topic: str, digests: set[str]) -> tuple[int, int]:
    """(records, distinct envelopes) of ``digests`` found on ``topic``."""
    seen = asyncio.run(_wire(settings, [topic], digests))
    return sum(seen.values()), len(seen)


async def _leader(settings: Settings, topic: str) -> tuple[int, list[int]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **settings.kafka_auth)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    part = described["partitions"][0]
    return int(part["leader"]), [int(n) for n in part["isr"]]


def leader_of(settings: Settings, topic: str, attempts: int = 30) -> tuple[int, list[int]]:
    """The leader of partition 0 of ``topic`` and its in-sync replicas (asked again while the
    metadata request lands on a node that was just killed)."""
    for _ in range(attempts - 1):
        try:
            return asyncio.run(_leader(settings, topic))
        except Exception:
            time.sleep(1.0)
    return asyncio.run(_leader(settings, topic))


def wait_in_sync(settings: Settings, topic: str, replicas: int, timeout: float = 120.0) -> float:
    """Seconds until partition 0 of ``topic`` has ``replicas`` in-sync replicas again."""
    def full() -> bool:
        try:
            return len(leader_of(settings, topic)[1]) >= replicas
        except Exception:
            return False

    return drain(full, timeout)


def in_order(arrivals: list[tuple[str, str]], sequence: dict[str, int]) -> list[str]:
    """The cases whose events did not arrive in the sender's sequence order (empty when all did)."""
    by_case: dict[str, list[int]] = {}
    for event_id, case_ref in arrivals:
        by_case.setdefault(case_ref, []).append(sequence[event_id])
    return sorted(case for case, seqs in by_case.items() if seqs != sorted(seqs))


def report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures and keep them in test-artifacts/faults-<name>.json."""
    print(f"\n[faults] {name}")
    for key, value in figures.items():
        print(f"  {key:38} {value}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"faults-{name}.json").write_text(json.dumps(figures, indent=2, default=str))


def progress(message: str) -> None:
    print(f"[faults] {message}", flush=True)


def log_sum(net: localnet.LocalNet, name: str, event: str, field: str) -> int:
    """The sum of ``field`` over the lines of ``event`` the named service logged (JSON logs)."""
    total = 0
    for path in (net.settings.home / "logs").glob(f"{name}*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if f'"event": "{event}"' in line:
                total += int(json.loads(line).get(field, 0))
    return total


def log_lines(net: localnet.LocalNet, name: str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` that the service ``name`` wrote."""
    path = net.settings.home / "logs" / f"{name}.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines()
            if f'"event": "{event}"' in line]


def held_partitions(net: localnet.LocalNet, name: str, processor: str = "router") -> set[int]:
    """The partition numbers the worker ``name`` holds now, by its log: each
    ``<processor>_assigned`` line names its whole assignment (the range assignor is eager),
    each ``<processor>_revoked`` line what it gave up."""
    held: set[int] = set()
    path = net.settings.home / "logs" / f"{name}.log"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    for raw in lines:
        if f'"{processor}_assigned"' in raw or f'"{processor}_revoked"' in raw:
            line = json.loads(raw)
            if line["event"] == f"{processor}_assigned":
                held = set(line["partitions"])
            elif line["event"] == f"{processor}_revoked":
                held -= set(line["partitions"])
    return held


def log_count(net: localnet.LocalNet, names: Iterator[str] | Iterable[str], event: str) -> int:
    """How many times ``event`` was logged by the named services (JSON logs, one event per line)."""
    total = 0
    logs = net.settings.home / "logs"
    for name in names:
        for path in logs.glob(f"{name}*.log"):
            lines = path.read_text(errors="replace").splitlines()
            total += sum(f'"event": "{event}"' in line for line in lines)
    return total
