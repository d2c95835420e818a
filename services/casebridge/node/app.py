"""A country node: faust app (inbox agent + outbox publisher) and the hub's HTTP API.

HTTP API (OpenAPI: ``deploy/openapi/node.yaml``): ``POST /events`` seals and queues an event,
``GET /events/{id}`` its status and receipts, ``GET /inbox`` the decrypted events addressed to
this participant (paged), ``POST /inbox/{id}/processed`` marks one handled (queues the signed
``receipt.processed``), ``GET /health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from aiohttp import web
from aiokafka import AIOKafkaProducer

from casebridge.core import limits
from casebridge.core.errors import CaseBridgeError, Malformed
from casebridge.core.keys import Identity
from casebridge.core.topics import IN_PREFIX, OUT_PREFIX
from casebridge.node import auth, service, store, validate
from casebridge.runtime import http
from casebridge.runtime.kafka import LazyProducer, create_app, raw_topic
from casebridge.runtime.logging import get_logger
from casebridge.runtime.private import private_dir, private_file
from casebridge.runtime.refresh import follow_directory, until_current
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World

log = get_logger("casebridge.node")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Node:
    settings: Settings
    world: World
    me: Identity
    conn: sqlite3.Connection
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    clients: auth.ClientsFile = field(init=False)  # who may call the HTTP API

    def __post_init__(self) -> None:
        self.clients = auth.ClientsFile(auth.clients_file(self.settings.home, self.participant))

    @property
    def participant(self) -> str:
        return self.me.participant


def node_db(home: Path, participant: str) -> Path:
    return home / "nodes" / participant / "node.sqlite"


def open_store(home: Path, participant: str) -> sqlite3.Connection:
    """The participant's store, readable by this user only (home and folders 0700, files 0600)."""
    path = node_db(home, participant)
    private_dir(path.parent, root=home)
    conn = store.connect(private_file(path))
    for journal in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if journal.exists():
            private_file(journal)
    return conn


def create_node(settings: Settings, world: World, participant: str, port: int) -> faust.App:
    """The node's faust app: inbox agent, outbox publisher and HTTP API on 127.0.0.1:``port``."""
    world = world.in_custody_of(participant)  # this node can sign as no one else
    node = Node(settings, world, world.identity(participant), open_store(settings.home, participant))
    app = create_app(settings, f"casebridge-node-{participant}")
    inbox = raw_topic(app, f"{IN_PREFIX}{participant}")

    async def receive(stream: Any) -> Any:
        async for value in stream:
            await until_current(node, "inbox")
            outcome = service.receive(node.world, node.me, node.conn, value, datetime.now(UTC))
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
    tls = http.server_tls(node.settings)
    host = node.settings.http_host
    log.info("http_listening", participant=node.participant, url=http.base_url(host, port, tls is not None))
    await http.serve_forever(http_app(node), host, port, tls)


ROUTE_SCOPES: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/events"): frozenset({"submit"}),
    ("GET", "/events/{id}"): frozenset({"submit", "read"}),
    ("GET", "/inbox"): frozenset({"read"}),
    ("POST", "/inbox/{id}/processed"): frozenset({"process"}),
}
"""The scopes that let a client call each operation (any one of them); /health needs none."""

STATUS_OF_CODE = {"unauthenticated": 401, "forbidden": 403, "oversized": 413, "replay": 409}
CODE_OF_STATUS = {404: "not_found", 405: "method_not_allowed", 413: "oversized", 415: "malformed"}


def http_app(node: Node) -> web.Application:
    api = web.Application(middlewares=[guard], client_max_size=limits.MAX_BODY_BYTES)
    api["node"] = node
    api.add_routes(
        [
            web.post("/events", post_event),
            web.get("/events/{id}", get_event),
            web.get("/inbox", get_inbox),
            web.post("/inbox/{id}/processed", post_processed),
            web.get("/health", health),
        ]
    )
    return api


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate and authorize the client, turn every refusal into JSON with a stable code
    (never a traceback), and log one line per request with the client id (never the token)."""
    started, client_id = time.monotonic(), None
    try:
        client_id = check_client(request)
        response = await handler(request)
    except CaseBridgeError as exc:
        response = refusal(STATUS_OF_CODE.get(exc.code, 400), exc.code, exc.why)
    except web.HTTPException as exc:  # aiohttp's own: unknown path or method (with its Allow), too large
        response = refusal(exc.status, CODE_OF_STATUS.get(exc.status, "malformed"), exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception as exc:  # a bug of ours: say so with a code, keep serving
        log.error("http_fault", participant=request.app["node"].participant, error=type(exc).__name__)
        response = refusal(500, "internal", "the node failed on this request; see its log")
    log.info("http_request", participant=request.app["node"].participant, client=client_id,
             method=request.method, route=route_of(request), status=response.status,
             ms=round((time.monotonic() - started) * 1000, 1))
    return response


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(none)"


def check_client(request: web.Request) -> str | None:
    """The id of the calling client, if the operation needs one (``Unauthenticated``, ``Forbidden``)."""
    needed = ROUTE_SCOPES.get((request.method, route_of(request)))
    if needed is None:
        return None
    node: Node = request.app["node"]
    client = auth.authenticate(node.clients.current(), request.headers.get("Authorization"))
    auth.authorize(client, needed)
    return client.client_id


def refusal(status: int, code: str, why: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="casebridge-node"'} if status == 401 else None
    return web.json_response({"status": "rejected", "code": code, "why": why}, status=status, headers=headers)


async def json_body(request: web.Request) -> Any:
    """The request's body as JSON (``Malformed`` if it is not JSON; 413 past the size limit)."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Malformed(f"the body is not JSON: {type(exc).__name__}") from exc


async def post_event(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    doc = validate.event_document(await json_body(request))
    result = service.submit(node.world, node.me, node.conn, doc, datetime.now(UTC))
    node.wake.set()
    body = {
        "event_id": result.event_id,
        "status": result.status,
        "code": result.code,
        "why": result.why,
        "recipients": list(result.recipients),
        "withheld": {r: list(cats) for r, cats in result.withheld.items()},
    }
    return web.json_response(body, status=202 if result.status == "queued" else 422)


async def get_event(request: web.Request) -> web.Response:
    status = service.status_of(request.app["node"].conn, request.match_info["id"])
    if status is None:
        return refusal(404, "not_found", "no event of this node or receipt has this id")
    return web.json_response(status)


async def get_inbox(request: web.Request) -> web.Response:
    limit = validate.page_limit(request.query.get("limit"))
    after = validate.page_cursor(request.query.get("after"))
    page = store.inbox_page(request.app["node"].conn, after, limit)
    cursor = f"{page[-1]['received_at']}|{page[-1]['event_id']}" if page else None
    return web.json_response({"events": page, "next": cursor})


async def post_processed(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    result = service.mark_processed(
        node.world, node.me, node.conn, request.match_info["id"], datetime.now(UTC)
    )
    if result is None:
        return refusal(404, "not_found_or_already_processed", "no unprocessed inbox event has this id")
    node.wake.set()
    return web.json_response({"receipt_event_id": result.event_id, "status": result.status})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"participant": request.app["node"].participant, "ok": True})
