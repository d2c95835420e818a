"""``casebridge demo``: the README's main job.

Until the network (nodes, router) exists, the demo starts the local broker (unless
``KAFKA_BOOTSTRAP_SERVERS`` names one) and proves the round trip a sealed event will take:
durable produce to a sender's outbox topic, consume from it. It says so when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from dataclasses import replace
from typing import Any

from casebridge.cli.broker import progress
from casebridge.runtime import broker
from casebridge.runtime.kafka import ensure_topics, new_consumer, new_producer
from casebridge.runtime.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="start the local broker and run the demonstration")
    parser.set_defaults(func=cmd_demo)


def say(message: str) -> None:
    print(message, flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        spec = broker.BrokerSpec(state_dir=settings.broker_dir, cache_dir=settings.kafka_cache,
                                 pom=settings.kafka_pom)
        settings = replace(settings, bootstrap_servers=broker.start(spec, progress))
    say(f"Kafka answering at {settings.bootstrap_servers}")
    say("NOTE: the network (nodes, router) is not built yet: this demo runs the broker smoke flow.")
    return asyncio.run(smoke_flow(settings))


async def smoke_flow(settings: Settings) -> int:
    topic, case_ref = "cb.out.TH.MSDHS", f"case-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic])
    producer = new_producer(settings)
    await producer.start()
    started = time.monotonic()
    try:
        sent = await producer.send_and_wait(topic, b"smoke", key=case_ref.encode())
    finally:
        await producer.stop()
    say(f"published to {topic} partition {sent.partition} offset {sent.offset} (acks=all, idempotent)")
    consumer = new_consumer(settings, topic, group_id=f"demo-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            async for record in consumer:
                if record.key == case_ref.encode():
                    break
    except TimeoutError:
        print("demo FAILED: the record did not come back within 30 s", file=sys.stderr)
        return 1
    finally:
        await consumer.stop()
    say(f"consumed it back in {1000 * (time.monotonic() - started):.0f} ms: demo OK")
    return 0
