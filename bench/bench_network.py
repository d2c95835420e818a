"""Network benchmark (issue 8, part 1). PARTIAL: baselines A and B only.

Not built yet: the router run, end-to-end latency, worker and fan-out scaling, the PNG chart.

Baseline A: raw aiokafka consume -> produce passthrough (acks=all, idempotent) on a dedicated broker.
Baseline B: Ed25519 verifications per second on one core.
Run: ``.venv/bin/python bench/bench_network.py [--quick]``; writes ``bench/results/network-<ts>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from casebridge.runtime import broker  # noqa: E402
from casebridge.runtime.settings import Settings  # noqa: E402

ENVELOPE_SIZE = 2048  # bytes; stands in for a sealed envelope of about this size


def verify_rate(seconds: float) -> float:
    """Ed25519 verifications per second on one core (baseline B)."""
    key = Ed25519PrivateKey.generate()
    message = os.urandom(ENVELOPE_SIZE)
    signature, public = key.sign(message), key.public_key()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            public.verify(signature, message)
        count += 200
    return count / (time.perf_counter() - start)


async def fill(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        value = os.urandom(ENVELOPE_SIZE)
        for i in range(count):
            await producer.send(topic, value, key=f"CB-{i % 100}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def passthrough(bootstrap: str, source: str, sink: str, count: int) -> float:
    """Consume ``count`` records from ``source`` and write each unchanged to ``sink``; records/s."""
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id="bench.passthrough",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        done, start = 0, 0.0
        while done < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batches.values():
                start = start or time.perf_counter()
                for record in records:
                    await producer.send(sink, record.value, key=record.key)
                done += len(records)
        await producer.flush()
        return count / (time.perf_counter() - start)
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--envelopes", type=int, default=10_000)
    args = parser.parse_args()
    count = 3_000 if args.quick else args.envelopes
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "envelopes": count}
    print("baseline B: Ed25519 verify ...", flush=True)
    results["verify_per_s"] = verify_rate(1.0 if args.quick else 3.0)
    print(f"  {results['verify_per_s']:.0f} verifications/s", flush=True)
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="cb-bench-") as state:
        spec = broker.BrokerSpec(state_dir=Path(state), cache_dir=settings.kafka_cache,
                                 pom=settings.kafka_pom, base_port=broker.free_base_port())
        bootstrap = broker.start(spec, lambda msg: print(f"[kafka] {msg}", flush=True))
        try:
            asyncio.run(fill(bootstrap, "bench.src", count))
            print("baseline A: passthrough ...", flush=True)
            rate = asyncio.run(passthrough(bootstrap, "bench.src", "bench.sink", count))
            results["passthrough_per_s"] = rate
            print(f"  {results['passthrough_per_s']:.0f} envelopes/s", flush=True)
        finally:
            broker.stop(spec, lambda msg: None)
    results.update(router_to_passthrough=None, router_to_verify_limit=None, p99_to_passthrough_p99=None,
                   missing="router, end-to-end latency, worker/fan-out scaling, chart: not built")
    out = ROOT / "bench" / "results" / f"network-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
