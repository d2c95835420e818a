"""A country node: faust app (inbox agent + outbox publisher) and the hub's HTTP API.

HTTP API (OpenAPI: ``deploy/openapi/node.yaml``): ``POST /events`` seals and queues an event,
``GET /events/{id}`` its status and receipts, ``GET /inbox`` the decrypted events addressed to
this participant (paged), ``POST /inbox/{id}/processed`` marks one handled (queues the signed
``receipt.processed``), ``GET /health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from aiohttp import web
from aiokafka import AIOKafkaProducer

from casebridge.core.errors import CaseBridgeError
from casebridge.core.keys import Identity
from casebridge.core.relay import IN_PREFIX, OUT_PREFIX
from casebridge.node import protection_api, service, store
from casebridge.node.vault import Vault
from casebridge.runtime.kafka import LazyProducer, create_app, raw_topic
from casebridge.runtime.logging import get_logger
from casebridge.runtime.refresh import follow_directory, until_current
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World

log = get_logger("casebridge.node")


@dataclass
class Node:
    settings: Settings
    world: World
    me: Identity
    conn: sqlite3.Connection
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    vault: Vault | None = None  # at-rest keys: what the node decrypted is stored encrypted

    @property
    def participant(self) -> str:
        return self.me.participant


def node_db(home: Path, participant: str) -> Path:
    return home / "nodes" / participant / "node.sqlite"


def create_node(settings: Settings, world: World, participant: str, port: int) -> faust.App:
    """The node's faust app: inbox agent, outbox publisher and HTTP API on 127.0.0.1:``port``."""
    node = Node(
        settings, world, world.identity(participant), store.connect(node_db(settings.home, participant))
    )
    node.vault = protection_api.open_node_vault(
        settings, node.conn, node_db(settings.home, participant).parent)
    app = create_app(settings, f"casebridge-node-{participant}")
    inbox = raw_topic(app, f"{IN_PREFIX}{participant}")

    async def receive(stream: Any) -> Any:
        async for value in stream:
            await until_current(node, "inbox")
            outcome = service.receive(node.world, node.me, node.conn, value, datetime.now(UTC), node.vault)
            log.info(
                "received",
                participant=participant,
                event_id=outcome.event_id,
                outcome=outcome.outcome,
                code=outcome.code,
                event_type=outcome.header.event_type if outcome.header else None,
            )
            node.wake.set()
            yield outcome.outcome

    app.agent(inbox, name="inbox")(receive)
    follow_directory(app, node)
    lazy = LazyProducer(app, settings)
    app.task(lambda: publish_forever(node, lazy))
    app.task(lambda: serve_http(node, port))
    return app


async def publish_forever(node: Node, lazy: LazyProducer) -> None:
    """Send queued envelopes in sequence order until the broker acknowledges each; retry forever."""
    topic, backoff = f"{OUT_PREFIX}{node.participant}", 0.5
    while True:
        try:
            await publish_queued(node, await lazy.get(), topic)
            backoff = 0.5
        except Exception as exc:  # the broker is away: keep everything queued and retry
            log.warning("publish_retry", participant=node.participant, error=type(exc).__name__)
            await lazy.reset()  # a new producer: the old one may be unusable for good
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            continue
        with contextlib.suppress(TimeoutError):  # wake up at least twice a second
            await asyncio.wait_for(node.wake.wait(), timeout=0.5)
        node.wake.clear()


async def publish_queued(node: Node, producer: AIOKafkaProducer, topic: str) -> None:
    """Send a batch of queued envelopes without waiting for each acknowledgement, then mark the
    acknowledged ones published (one transaction); a failed send leaves its row queued and is
    raised, so the caller retries with a new producer. Order holds per partition: one idempotent
    producer, so a record after a failed one in the same partition fails too."""
    rows = store.queued(node.conn)
    sends: list[asyncio.Future[Any]] = []
    failure: BaseException | None = None
    try:
        for row in rows:
            assert row.envelope is not None
            sends.append(await producer.send(topic, row.envelope, key=row.case_ref.encode()))
    except Exception as exc:  # could not even hand it to the producer: the rest wait
        failure = exc
    results = await asyncio.gather(*sends, return_exceptions=True)
    done = [row for row, result in zip(rows, results, strict=False) if not isinstance(result, BaseException)]
    store.mark_published_all(node.conn, [row.event_id for row in done], datetime.now(UTC))
    for row in done:
        log.info(
            "published",
            participant=node.participant,
            event_id=row.event_id,
            event_type=row.event_type,
            case_ref=row.case_ref,
            sequence=row.sequence,
        )
    failure = failure or next((r for r in results if isinstance(r, BaseException)), None)
    if failure is not None:
        raise failure


async def serve_http(node: Node, port: int) -> None:
    runner = web.AppRunner(http_app(node))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    log.info("http_listening", participant=node.participant, port=port)
    await asyncio.Event().wait()


def http_app(node: Node) -> web.Application:
    api = web.Application()
    api["node"] = node
    api.add_routes(
        [
            web.post("/events", post_event),
            web.get("/events/{id}", get_event),
            web.get("/inbox", get_inbox),
            web.post("/inbox/{id}/processed", post_processed),
            web.get("/health", health),
            *protection_api.routes(),
        ]
    )
    return api


async def post_event(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    try:
        doc = await request.json()
        result = service.submit(node.world, node.me, node.conn, doc, datetime.now(UTC))
    except CaseBridgeError as exc:
        return web.json_response({"status": "rejected", "code": exc.code, "why": exc.why}, status=400)
    except ValueError as exc:
        return web.json_response({"status": "rejected", "code": "malformed", "why": str(exc)}, status=400)
    node.wake.set()
    body = {
        "event_id": result.event_id,
        "status": result.status,
        "code": result.code,
        "why": result.why,
        "recipients": list(result.recipients),
    }
    return web.json_response(body, status=202 if result.status == "queued" else 422)


async def get_event(request: web.Request) -> web.Response:
    status = service.status_of(request.app["node"].conn, request.match_info["id"])
    if status is None:
        return web.json_response({"code": "not_found"}, status=404)
    return web.json_response(status)


async def get_inbox(request: web.Request) -> web.Response:
    limit = min(int(request.query.get("limit", "50")), 500)
    page = protection_api.readable(request.app["node"], store.inbox_page(
        request.app["node"].conn, request.query.get("after", ""), limit))
    cursor = f"{page[-1]['received_at']}|{page[-1]['event_id']}" if page else None
    return web.json_response({"events": page, "next": cursor})


async def post_processed(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    result = service.mark_processed(
        node.world, node.me, node.conn, request.match_info["id"], datetime.now(UTC)
    )
    if result is None:
        return web.json_response({"code": "not_found_or_already_processed"}, status=404)
    node.wake.set()
    return web.json_response({"receipt_event_id": result.event_id, "status": result.status})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"participant": request.app["node"].participant, "ok": True})
