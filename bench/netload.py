"""Load and measurement helpers of ``bench_network.py`` (issue 8, part 1).

Everything here drives the real services as processes, the way ``casebridge.demo.localnet``
does: a dedicated local broker per measurement (so the router's consumer offsets and its
changelog-backed chain state start empty), a trust world and topics from ``localnet.prepare``,
envelopes sealed by ``casebridge.node.service.submit`` (real chains: sequence 1, 2, 3 … and the
previous envelope's hash), and ``casebridge router run`` / ``casebridge node run`` subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_LOG_APPEND_TIME
from confluent_kafka import TopicPartition as KafkaPartition

from casebridge.core import avro, issued, sealing, topics
from casebridge.demo import localnet, scenario
from casebridge.localkafka import broker
from casebridge.node import service, store
from casebridge.node.app import node_db
from casebridge.runtime import ckafka
from casebridge.runtime.kafka import ensure_topics
from casebridge.runtime.settings import Settings
from casebridge.runtime.topics import network_topics
from casebridge.runtime.world import World

Say = Callable[[str], None]
ROUTER_PRINCIPAL = "REG.ROUTER"


# --- event flows the agreements allow -------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    """One sender's stream of ``return_plan.proposed`` events to ``to`` (countries)."""

    sender: str
    to: tuple[str, ...]
    consent: tuple[str, ...] = ()  # recorded once per case (consent.recorded) before the events


# four senders, one recipient each (bilateral TH-KH, TH-VN, TH-MM agreements)
ONE_RECIPIENT = (
    Flow("TH.MSDHS", ("KH",)),
    Flow("KH.MOSVY", ("TH",)),
    Flow("VN.MOLISA", ("TH",)),
    Flow("MM.DSW", ("TH",)),
)
# the same four senders, six recipients each: government focal points plus the NGOs the
# agreements name, which need the case's ngo_sharing consent
SIX_RECIPIENTS = (
    Flow("TH.MSDHS", ("KH", "LA", "VN"), ("ngo_sharing",)),
    Flow("KH.MOSVY", ("TH", "LA", "VN", "MM"), ("ngo_sharing",)),
    Flow("VN.MOLISA", ("TH", "KH", "LA", "MM"), ("ngo_sharing",)),
    Flow("MM.DSW", ("TH", "KH", "LA", "VN"), ("ngo_sharing",)),
)
CASES_PER_SENDER = 24  # spread over the partitions, so that two workers share the load


def plan_doc(case_ref: str, to: Sequence[str], n: int) -> dict[str, Any]:
    """The event of the router-kill integration test: an operational return plan."""
    return scenario.return_plan(case_ref, n, to)


def consent_doc(case_ref: str, sender: str, scopes: Sequence[str]) -> dict[str, Any]:
    return {
        "event_type": "consent.recorded",
        "case_ref": case_ref,
        "to": [sender.split(".")[0]],
        "consent_scopes": list(scopes),
        "payload": {"operational": {"scopes": list(scopes), "recorded_at": datetime.now(UTC).isoformat()}},
    }


@dataclass(frozen=True)
class Sealed:
    topic: str
    key: bytes
    value: bytes
    event_id: str
    recipients: tuple[str, ...]
    consent: bool = False  # a consent.recorded event that precedes its case's plans


def preseal(world: World, folder: Path, flows: Sequence[Flow], events: int) -> list[Sealed]:
    """``events`` return plans (plus one consent.recorded per case where the flow needs it),
    split over ``flows``, sealed and chained by the node's own ``submit`` into a fresh SQLite
    store per sender, read back from the outbox in sequence order."""
    out: list[Sealed] = []
    for index, flow in enumerate(flows):
        share = events // len(flows) + (1 if index < events % len(flows) else 0)
        path = folder / f"{flow.sender}-{os.getpid()}-{time.monotonic_ns()}.sqlite"
        conn = store.connect(path)
        conn.execute("PRAGMA synchronous=OFF")  # the bench's scratch store: durability not needed
        me = world.identity(flow.sender)
        cases = [f"CB-B-{flow.sender}-{c}" for c in range(CASES_PER_SENDER)]
        consents: set[str] = set()
        if flow.consent:
            for case in cases:
                answer = service.submit(world, me, conn, consent_doc(case, flow.sender, flow.consent),
                                        datetime.now(UTC))
                if answer.status != "queued":
                    raise RuntimeError(f"consent.recorded by {flow.sender} refused: {answer.code} "
                                       f"{answer.why}")
                consents.add(answer.event_id)
        for n in range(share):
            answer = service.submit(world, me, conn, plan_doc(cases[n % len(cases)], flow.to, n),
                                    datetime.now(UTC))
            if answer.status != "queued":
                raise RuntimeError(f"{flow.sender} -> {flow.to} refused: {answer.code} {answer.why}")
        rows = store.queued(conn, limit=share + len(consents) + 1)
        partitions = store.partition_count(conn)
        conn.close()
        with contextlib.suppress(OSError):
            path.unlink()
        chains: dict[int, list[int]] = {}  # one chain per partition of the sender's outbox
        for r in rows:
            chains.setdefault(topics.partition_for(r.case_ref.encode(), partitions), []).append(r.sequence)
        assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in chains.values())
        out += [
            Sealed(f"cb.out.{flow.sender}", r.case_ref.encode(), r.envelope or b"", r.event_id,
                   r.recipients, r.event_id in consents)
            for r in rows
        ]
    return out


# --- a dedicated broker and network per measurement -----------------------------------------


@contextlib.contextmanager
def dedicated_broker(base: Settings, say: Say) -> Iterator[str]:
    """A fresh single-node unsecured broker on free ports; its bootstrap address."""
    with tempfile.TemporaryDirectory(prefix="cb-bench-broker-") as state:
        spec = broker.BrokerSpec(state_dir=Path(state), cache_dir=base.kafka_cache, pom=base.kafka_pom,
                                 base_port=broker.free_base_port(), secure=False)
        bootstrap = broker.start(spec, lambda msg: say(f"[kafka] {msg}"))
        try:
            yield bootstrap
        finally:
            broker.stop(spec, lambda msg: None)


@contextlib.contextmanager
def network(base: Settings, say: Say) -> Iterator[tuple[Settings, World]]:
    """A dedicated broker, a fresh home, the trust world and every topic (``localnet.prepare``)."""
    with (dedicated_broker(base, say) as bootstrap,
          tempfile.TemporaryDirectory(prefix="cb-bench-home-") as home):
        settings = replace(base, bootstrap_servers=bootstrap, home=Path(home), sasl_username="",
                           sasl_password="", replication=1)
        world = localnet.prepare(settings)
        warm_up(settings, say)
        yield settings, world


WARM_UP_RECORDS = 40_000


def warm_up(settings: Settings, say: Say, records: int = WARM_UP_RECORDS) -> None:
    """Run a fresh broker's hot paths before anything is measured on it: ``records`` of envelope
    size through a 6-partition scratch topic, written in transactions of 1,000 and read back
    read_committed. A fresh broker's JIT compiler threads took ~30% of a core for its first
    minute (measured per thread, 2026-12-02), inside the measurement before."""
    topic = "bench.warmup"
    asyncio.run(ensure_topics(settings, [topic], 6, 1))
    began = time.monotonic()
    producer = ckafka.transactional_producer(settings, f"bench-warmup-{os.getpid()}",
                                             log_level=3)  # not the retries while the coordinator loads
    producer.init_transactions(30)
    value = bytes(480)
    for start in range(0, records, 1000):
        producer.begin_transaction()
        for n in range(start, min(start + 1000, records)):
            while True:
                try:
                    producer.produce(topic, value, f"CB-W-{n % 96}".encode())
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.commit_transaction(30)
    reader = ckafka.consumer(settings, f"bench-warmup-{os.getpid()}")
    reader.subscribe([topic])
    seen, deadline = 0, time.monotonic() + 120
    try:
        while seen < records and time.monotonic() < deadline:
            seen += sum(1 for m in reader.consume(1000, 1.0) if m.error() is None)
    finally:
        reader.close()
    say(f"  [warm-up] {records} records through the fresh broker (transactions of 1,000, read back "
        f"read_committed: {seen}) in {time.monotonic() - began:.1f} s")


PUBLISH_LINGER_MS = 20


def publish(settings: Settings, envelopes: Sequence[Sealed]) -> None:
    """Every envelope to its sender's outbox topic, keyed by case (murmur2), acks=all, idempotent,
    in chain order, with librdkafka (``ckafka.producer``). It runs while the router routes, on the
    same 2 cores, so it should cost them little: aiokafka's producer did it before 2026-12-02's
    fifth session, in 16 KiB batches that cost the broker 224-273 us of CPU an envelope routed,
    against 100-188 us with this one (10,000 envelopes, interleaved runs; bench/README.md)."""
    producer = ckafka.producer(settings, **{"linger.ms": PUBLISH_LINGER_MS})
    for env in envelopes:
        while True:
            try:
                producer.produce(env.topic, env.value, env.key)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} of {len(envelopes)} envelopes not acknowledged by the broker in 60 s")


# --- the router's sustained rate ------------------------------------------------------------


@dataclass
class AuditTally:
    timestamps: list[int] = field(default_factory=list)  # Kafka record timestamps, ms
    outcomes: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    deliveries: int = 0
    timestamp_type: int | None = None


def read_audit(settings: Settings, schemas: avro.SchemaSet, expected: int, timeout: float) -> AuditTally:
    """Read ``cb.audit`` (committed records) from the beginning until ``expected`` records (or
    ``timeout`` s). It runs beside the router on the same cores, so it only collects the records
    (librdkafka) and decodes them once it has them all."""
    reader = ckafka.consumer(settings, f"bench-audit-{os.getpid()}", **{"fetch.wait.max.ms": 100})
    reader.assign([KafkaPartition(topics.AUDIT, p, OFFSET_BEGINNING) for p in range(topics.AUDIT_PARTITIONS)])
    got: list[tuple[int, int, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            for m in reader.consume(2000, 0.5):
                if m.error() is None:
                    kind, stamp = m.timestamp()
                    got.append((stamp, kind, m.value() or b""))
    finally:
        reader.close()
    tally = AuditTally()
    for stamp, kind, value in got:
        record = avro.decode(schemas, value, issued.AUDIT)
        tally.timestamps.append(stamp)
        tally.timestamp_type = 1 if kind == TIMESTAMP_LOG_APPEND_TIME else 0  # Kafka's own numbering
        tally.outcomes[record["outcome"]] += 1
        if record["code"]:
            tally.codes[record["code"]] += 1
        tally.deliveries += len(record["recipients"])
    return tally


async def inbox_offsets(settings: Settings, participants: Sequence[str]) -> int:
    """The records in every ``cb.in.<participant>`` topic (sum of end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)
    await consumer.start()
    partitions = {spec.name: spec.partitions for spec in network_topics(participants)}
    try:
        parts = [TopicPartition(f"cb.in.{p}", n) for p in participants
                 for n in range(partitions[f"cb.in.{p}"])]
        ends = await consumer.end_offsets(parts)
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def quarantine_sample(
    settings: Settings, schemas: avro.SchemaSet, limit: int = 3
) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(topics.QUARANTINE, bootstrap_servers=settings.bootstrap_servers,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=3000, max_records=limit)
        found = [avro.decode(schemas, m.value, issued.QUARANTINED) for ms in batch.values() for m in ms]
        return [{k: q.get(k) for k in ("code", "why", "sender", "topic", "offset")} for q in found[:limit]]
    finally:
        await consumer.stop()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process and of its running child processes (Linux
    /proc; the router's signature-check child is its CPU too), seconds."""
    own = process_cpu(pid)
    if own is None:
        return None
    return own + sum(process_cpu(child) or 0.0 for child in children(pid))


def process_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def children(pid: int) -> list[int]:
    """The running child processes of ``pid`` and theirs (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):  # ended meanwhile
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += parents.get(child, [])
    return found


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """Per thread of a running process and of its child processes (Linux /proc): thread id ->
    (group, user + system CPU s); the group is ``main``, ``librdkafka`` (its ``rdk:*`` threads),
    ``python threads`` or ``child processes`` (the router's signature-check child)."""
    found: dict[str, tuple[str, float]] = {}
    for process in (pid, *children(pid)):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{process}/task").iterdir():
                try:
                    comm = (task / "comm").read_text().strip()
                    fields = (task / "stat").read_text().rpartition(")")[2].split()
                except OSError:  # the thread ended meanwhile
                    continue
                group = ("child processes" if process != pid else "main" if task.name == str(pid)
                         else "librdkafka" if comm.startswith("rdk:") else "python threads")
                found[task.name] = (group, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return found


def cpu_by_group(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]],
                 envelopes: int) -> dict[str, float]:
    """CPU microseconds per envelope spent by each thread group between two ``thread_cpu``."""
    spent: Counter[str] = Counter()
    for tid, (group, seconds) in after.items():
        spent[group] += seconds - before.get(tid, (group, 0.0))[1]
    return {group: round(s / max(envelopes, 1) * 1e6, 1) for group, s in spent.most_common()}


def count_routed(log: Path) -> int:
    """The deliveries a router's committed batches counted in its JSON log (which worker did the
    work): the ``delivered`` outcomes of its ``router_batch`` lines."""
    if not log.exists():
        return 0
    return sum(json.loads(line).get("outcomes", {}).get("delivered", 0)
               for line in log.read_text(errors="replace").splitlines() if '"router_batch"' in line)


def assignments(log: Path) -> list[int]:
    """The partitions a router worker was last assigned (its JSON log)."""
    last: list[int] = []
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if '"router_assigned"' in line:
                last = list(json.loads(line)["partitions"])
    return last


def wait_assigned(net: localnet.LocalNet, names: Sequence[str], partitions: int, say: Say,
                  timeout: float = 60.0) -> None:
    """Until the workers together hold every partition, each its own share (a settled group)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = [assignments(net.services[n].log) for n in names]
        if all(held) and sorted(p for h in held for p in h) == list(range(partitions)):
            say(f"  workers assigned: {dict(zip(names, held, strict=True))}")
            return
        time.sleep(0.2)
    raise TimeoutError(f"router workers {list(names)} did not share the {partitions} partitions "
                       f"in {timeout:.0f} s")


def router_run(
    settings: Settings,
    world: World,
    envelopes: Sequence[Sealed],
    say: Say,
    workers: int = 1,
    timeout: float = 300.0,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """Start ``workers`` router processes, wait until they share every partition, then publish the
    pre-sealed envelopes and time the router's first to last ``cb.audit`` record (Kafka record
    timestamps); each worker's routing CPU is its CPU time from then to the end."""
    expected = len(envelopes)
    net = localnet.LocalNet(settings, world)
    spy: subprocess.Popen[bytes] | None = None
    names = ["router"] + [f"router{i}" for i in range(2, workers + 1)]
    try:
        spawned = time.time()
        for name in names:
            net.spawn(name, ["router", "run"], principal=ROUTER_PRINCIPAL)
        wait_assigned(net, names, settings.partitions, say)
        at_first = {n: cpu_seconds(net.services[n].process.pid) for n in names}
        threads_first = {n: thread_cpu(net.services[n].process.pid) for n in names}
        publish(settings, envelopes)
        if profile_to is not None:
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(net.services["router"].process.pid), "--format", "raw", "--rate", "250",
                 "--nonblocking", "-o", str(profile_to)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        tally = read_audit(settings, world.schemas, expected, timeout)
        for name in names:
            net.check_alive(name)
        cpu = {name: cpu_seconds(net.services[name].process.pid) for name in names}
        by_thread = {n: cpu_by_group(threads_first[n], thread_cpu(net.services[n].process.pid), expected)
                     for n in names}
        routing_cpu = {n: round(c - (at_first.get(n) or 0.0), 3) if c is not None else None
                       for n, c in cpu.items()}
        routed = {name: count_routed(net.services[name].log) for name in names}
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
        net.stop()
    quarantined = tally.outcomes.get("quarantined", 0)
    recipients = sorted({r for e in envelopes for r in e.recipients})
    stored = asyncio.run(inbox_offsets(settings, recipients))
    ts = sorted(tally.timestamps)
    span = (ts[-1] - ts[0]) / 1000 if len(ts) > 1 else float("nan")
    result: dict[str, Any] = {
        "workers": workers,
        "envelopes": expected,
        "consent_events": sum(e.consent for e in envelopes),
        "senders": sorted({e.topic.removeprefix("cb.out.") for e in envelopes}),
        "mean_envelope_bytes": round(statistics.fmean(len(e.value) for e in envelopes), 1),
        "recipients_per_plan": max(len(e.recipients) for e in envelopes if not e.consent),
        "audit_records": len(ts),
        "delivered": tally.outcomes.get("delivered", 0),
        "quarantined": quarantined,
        "deliveries_in_audit": tally.deliveries,
        "deliveries_expected": sum(len(e.recipients) for e in envelopes),
        "records_in_inbox_topics": stored,
        "audit_timestamp_type": {0: "CreateTime", 1: "LogAppendTime"}.get(tally.timestamp_type or 0),
        "first_to_last_audit_s": round(span, 3),
        # only a complete run has a rate; an incomplete one keeps its partial rate apart
        "envelopes_per_s": (len(ts) - 1) / span if len(ts) == expected > 1 and span > 0 else None,
        "partial_envelopes_per_s": (len(ts) - 1) / span if len(ts) > 1 and span > 0 else None,
        "spawn_to_first_audit_s": round(ts[0] / 1000 - spawned, 3) if ts else None,
        "routed_by_worker": routed,
        "routed_share_by_worker": {n: round(r / max(sum(routed.values()), 1), 3) for n, r in routed.items()},
        # CPU the workers spent from the settled assignment (before publishing) to the end of the run
        "routing_cpu_s_by_worker": routing_cpu,
        # the same CPU per envelope by thread group: the loop (main), the verifier threads, librdkafka
        "routing_cpu_us_per_envelope_by_thread": by_thread,
        "envelopes_per_router_cpu_s": (round(len(ts) / sum(c for c in routing_cpu.values() if c), 1)
                                       if any(routing_cpu.values()) else None),
        # CPU the worker used from its start to the end of the run, over that wall time
        "cpu_s_by_worker": cpu,
        "cpu_share_by_worker": {n: round(c / (ts[-1] / 1000 - spawned), 3) if c is not None and ts else None
                                for n, c in cpu.items()},
        "complete": len(ts) == expected and quarantined == 0,
    }
    if len(ts) < expected:
        say(f"  INCOMPLETE: {len(ts)} of {expected} audit records within {timeout:.0f} s")
    if result["envelopes_per_s"] is not None:
        result["deliveries_per_s"] = result["envelopes_per_s"] * tally.deliveries / max(len(ts), 1)
    if quarantined:
        result["quarantine_codes"] = dict(tally.codes)
        result["quarantine_sample"] = asyncio.run(quarantine_sample(settings, world.schemas))
        say(f"  QUARANTINED {quarantined}: {result['quarantine_sample']}")
    return result


# --- py-spy raw output ----------------------------------------------------------------------


def hot_spots(raw: Path, top: int = 10) -> dict[str, Any]:
    """Top ``top`` functions by own samples (leaf frames), and the router's own functions
    (``casebridge/``, not the CLI) by inclusive samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in {f for f in frames if "casebridge/" in f and "cli/" not in f}:
            inclusive[frame] += n

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "samples": n, "share": round(n / total, 3) if total else 0.0}
                for f, n in counter.most_common(top)]
    return {"samples": total, "self": rows(own), "casebridge_inclusive": rows(inclusive)}


# --- end-to-end latency at a fixed rate -----------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def at(q: float) -> float | None:
        value = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
        return round(value * 1000, 2) if value != float("inf") else None

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1.0)}


def stored_count(db: Path) -> int:
    """Rows in a node's inbox, read-only (WAL: the node keeps writing)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


@dataclass(frozen=True)
class Phase:
    rate: float  # events/s offered
    seconds: float
    drain: float  # longest wait after the last POST for the recipient to store everything


def end_to_end(
    settings: Settings, world: World, phases: Sequence[Phase], say: Say,
    sender: str = "TH.MSDHS", recipient: str = "KH.MOSVY", threads: int = 16,
) -> list[dict[str, Any]]:
    """Sender node, router and recipient node as processes; for each phase in turn, POST events
    to the sender's API at a fixed rate and take each event's latency from its POST's start to the
    recipient's ``received_at`` (GET /inbox). An event not stored ``drain`` s after the phase's
    last POST counts as infinitely late in the percentiles (p99 is then ``None``), so an
    overloaded pipeline is never reported as fast."""
    net = localnet.LocalNet(settings, world)
    try:
        net.start_node(sender)
        net.start_node(recipient)
        net.spawn("router", ["router", "run"], principal=ROUTER_PRINCIPAL)
        net.wait_healthy()
        db = node_db(settings.home, recipient)
        for n in range(5):  # warm-up: the whole path answers before the clock starts
            status, body = net.call(sender, "POST", "/events", plan_doc("CB-W", [recipient[:2]], n))
            if status != 202:
                raise RuntimeError(f"warm-up event refused: {status} {body}")
        deadline = time.monotonic() + 120
        while stored_count(db) < 5:
            if time.monotonic() > deadline:
                raise TimeoutError("warm-up events never reached the recipient")
            time.sleep(0.2)
        return [fixed_rate(net, db, phase, say, sender, recipient, threads) for phase in phases]
    finally:
        net.stop()


def fixed_rate(net: localnet.LocalNet, db: Path, phase: Phase, say: Say, sender: str, recipient: str,
               threads: int, stages: bool = True) -> dict[str, Any]:
    """One phase at a fixed rate (see ``end_to_end``); ``stages``: split each event's latency
    (``latency_stages``), which reads the sender's outbox, the audit and the recipient's inbox on
    ``net``'s one cluster, so not across a federation."""
    before = stored_count(db)
    total = int(phase.rate * phase.seconds)
    sent: dict[str, float] = {}
    refused: Counter[int] = Counter()
    lock = threading.Lock()
    local = threading.local()  # one kept-alive connection per client thread, as a real client keeps
    headers = {"content-type": "application/json", "authorization": f"Bearer {net.tokens[sender]}"}

    def call(doc: dict[str, Any]) -> tuple[int, Any]:
        for attempt in (1, 2):  # once more on a fresh connection if the server closed the kept one
            if getattr(local, "conn", None) is None:
                local.conn = http.client.HTTPConnection("127.0.0.1", net.services[sender].port, timeout=30)
            try:
                local.conn.request("POST", "/events", json.dumps(doc).encode(), headers)
                response = local.conn.getresponse()
                return response.status, json.loads(response.read())
            except (http.client.HTTPException, ConnectionError):
                local.conn.close()
                local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(n: int) -> None:
        at = time.time()
        status, body = call(plan_doc(f"CB-L-{n % 16}", [recipient[:2]], n))
        with lock:
            if status == 202:
                sent[body["event_id"]] = at
            else:
                refused[status] += 1

    say(f"  posting {total} events at {phase.rate:.0f}/s to {sender} ...")
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for n in range(total):
            delay = start + n / phase.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(post, n)
    posting = time.monotonic() - start
    say(f"  posted {len(sent)} in {posting:.1f} s; waiting up to {phase.drain:.0f} s for the recipient ...")
    deadline = time.monotonic() + phase.drain
    while stored_count(db) < before + len(sent) and time.monotonic() < deadline:
        time.sleep(0.5)
    waited = time.monotonic() - start
    received: dict[str, float] = {}
    cursor = ""
    while True:
        page = net.call(recipient, "GET", f"/inbox?after={quote(cursor)}&limit=500")[1]
        for event in page["events"]:
            received[event["event_id"]] = datetime.fromisoformat(event["received_at"]).timestamp()
        if not page["next"] or len(page["events"]) < 500:
            break
        cursor = page["next"]
    latencies = [received[e] - at for e, at in sent.items() if e in received]
    late = [float("inf")] * (len(sent) - len(latencies))
    say(f"  {len(latencies)}/{len(sent)} stored {waited:.0f} s after the first POST")
    split = (asyncio.run(latency_stages(net.settings, net.world.schemas, sender, recipient, sent, received))
             if stages else None)
    return {
        "sender": sender,
        "recipient": recipient,
        "target_rate_per_s": phase.rate,
        "seconds": phase.seconds,
        "client_threads": threads,
        "posted": len(sent),
        "refused_by_status": {str(k): v for k, v in refused.items()},
        "achieved_post_rate_per_s": round(len(sent) / posting, 1),
        "received": len(latencies),
        "not_stored_in_time": len(late),
        "waited_until_s": round(waited, 1),
        "drain_limit_s": phase.drain,
        "overloaded": bool(late) or len(sent) < 0.95 * total,
        "latency_from": "POST /events start (client clock) -> recipient inbox received_at",
        **percentiles(latencies + late),
        "received_only": percentiles(latencies),
        # where the time went, per event stored (ms): stage -> percentiles
        "stages": split,
    }


STAGES = (
    ("post_to_sealed", "POST start (client) -> the envelope's created_at (sender node)"),
    ("sealed_to_published", "created_at -> its cb.out record's timestamp (the node's publisher)"),
    ("published_to_routed", "cb.out timestamp -> its batch's decided_at (the router's batch start)"),
    ("routed_to_delivered", "decided_at -> its cb.in record's timestamp (the router's step)"),
    ("delivered_to_stored", "cb.in timestamp -> received_at (the router's flush and commit, the "
                            "recipient's read_committed fetch and SQLite store)"),
)


async def latency_stages(settings: Settings, schemas: avro.SchemaSet, sender: str, recipient: str,
                         sent: dict[str, float], received: dict[str, float]) -> dict[str, Any]:
    """Each stored event's latency split at the clocks the pipeline records: the envelope's
    created_at, the Kafka CreateTime of its outbox record and of its delivery (set at produce), the
    router's decided_at in its audit record. One machine, so one clock; the stages of an event sum
    to its latency."""
    created: dict[str, float] = {}
    published: dict[str, float] = {}
    for m in await read_topic(settings, topics.outbox(sender)):
        outer = avro.decode(schemas, m.value, sealing.SEALED)
        header = avro.decode(schemas, outer["envelope"], sealing.ENVELOPE)["header"]
        created[header["event_id"]] = header["created_at"].timestamp()
        published[header["event_id"]] = m.timestamp / 1000
    routed: dict[str, float] = {}
    for m in await read_topic(settings, topics.AUDIT):
        record = avro.decode(schemas, m.value, issued.AUDIT)
        if record["outcome"] == "delivered" and record["event_id"] in sent:
            routed[record["event_id"]] = record["decided_at"].timestamp()
    delivered: dict[str, float] = {}
    for m in await read_topic(settings, topics.inbox(recipient)):
        event_id = dict(m.headers or ()).get("ce_id", b"").decode()
        if event_id in sent:
            delivered[event_id] = m.timestamp / 1000
    clocks = (sent, created, published, routed, delivered, received)
    events = [e for e in sent if all(e in clock for clock in clocks)]
    result: dict[str, Any] = {"events": len(events)}
    for (name, what), start, end in zip(STAGES, clocks, clocks[1:], strict=False):
        result[name] = {"what": what, **percentiles([end[e] - start[e] for e in events])}
    return result


async def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every committed record of ``topic``, from its beginning to its end now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed",
                                **settings.kafka_auth)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        records: list[Any] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            behind = [p for p in parts if await consumer.position(p) < ends[p]]
            if not behind:
                break
            for messages in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                records += messages
        return records
    finally:
        await consumer.stop()


async def passthrough_latency(bootstrap: str, payloads: Sequence[bytes], rate: float, seconds: float,
                              tag: str) -> dict[str, Any]:
    """Baseline A at a fixed rate: producer -> passthrough (consume, produce) -> consumer, in one
    process; latency = consume time - produce time (the time travels in a record header)."""
    source, sink = f"bench.lat.src.{tag}", f"bench.lat.sink.{tag}"
    await ensure_topics(Settings(bootstrap_servers=bootstrap), [source, sink], 1, 1)
    total = int(rate * seconds)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    relay_out = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    relay_in = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=f"bench.lat.{tag}",
                                auto_offset_reset="earliest", enable_auto_commit=True)
    sink_in = AIOKafkaConsumer(sink, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    for client in (producer, relay_out, relay_in, sink_in):
        await client.start()
    latencies: list[float] = []

    async def relay() -> None:
        done = 0
        while done < total:
            batch = await relay_in.getmany(timeout_ms=1000, max_records=500)
            for messages in batch.values():
                for m in messages:
                    await relay_out.send(sink, m.value, key=m.key, headers=list(m.headers))
                done += len(messages)

    async def drain() -> None:
        while len(latencies) < total:
            batch = await sink_in.getmany(timeout_ms=1000, max_records=500)
            now = time.time()
            for messages in batch.values():
                for m in messages:
                    latencies.append(now - float(dict(m.headers)["t"].decode()))

    try:
        tasks = [asyncio.ensure_future(relay()), asyncio.ensure_future(drain())]
        start = time.monotonic()
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(source, payloads[n % len(payloads)], key=f"CB-{n % 16}".encode(),
                                headers=[("t", repr(time.time()).encode())])
        posting = time.monotonic() - start
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=max(120.0, seconds * 2))
        return {"target_rate_per_s": rate, "seconds": seconds, "records": total,
                "achieved_rate_per_s": round(total / posting, 1), **percentiles(latencies)}
    finally:
        for client in (producer, relay_out, relay_in, sink_in):
            await client.stop()
