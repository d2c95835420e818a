"""A country node: its state and the hub's HTTP API (the Kafka side is ``casebridge.node.pump``).

HTTP API (OpenAPI: ``deploy/openapi/node.yaml``): ``POST /events`` seals and queues an event,
``GET /events/{id}`` its status and receipts, ``GET /inbox`` the decrypted events addressed to
this participant (paged), ``POST /inbox/{id}/processed`` marks one handled (queues the signed
``receipt.processed``), ``GET /health``; the protection routes of ``node.protection_api``
(``GET /records/{id}``, ``POST /cases/{case}/shred``, ``POST /records/{id}/forward``,
``POST /events/{id}/permissions``). Every route but /health needs a client's token with a scope
of ``ROUTE_SCOPES``, checked by ``guard``, which also answers every refusal.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from casebridge.core import limits
from casebridge.core.errors import CaseBridgeError
from casebridge.core.keys import Identity
from casebridge.node import auth, protection_api, service, store, validate
from casebridge.node.groupcommit import GroupCommit
from casebridge.node.vault import Vault
from casebridge.runtime import http
from casebridge.runtime.logging import get_logger
from casebridge.runtime.private import private_dir, private_file
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
    wake: threading.Event = field(default_factory=threading.Event)  # the publisher has work
    group: GroupCommit | None = None  # POST /events commits through it when set
    vault: Vault | None = None  # at-rest keys: what the node decrypted is stored encrypted
    clients: auth.ClientsFile = field(init=False)  # who may call the HTTP API

    def __post_init__(self) -> None:
        self.clients = auth.ClientsFile(auth.clients_file(self.settings.home, self.participant))

    @property
    def participant(self) -> str:
        return self.me.participant


def node_db(home: Path, participant: str) -> Path:
    return home / "nodes" / participant / "node.sqlite"


def open_store(home: Path, participant: str, partitions: int | None = None) -> sqlite3.Connection:
    """The participant's store, readable by this user only (home and folders 0700, files 0600)."""
    path = node_db(home, participant)
    private_dir(path.parent, root=home)
    conn = store.connect(private_file(path), partitions)
    for journal in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if journal.exists():
            private_file(journal)
    return conn


async def submit_event(node: Node, doc: Mapping[str, Any]) -> service.Submitted:
    """Seal and queue one event, durably, with the next group commit (or alone without one)."""
    if node.group is None:
        return service.submit(node.world, node.me, node.conn, doc, datetime.now(UTC))
    return await node.group.submit(doc)


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
    ("GET", "/records/{id}"): frozenset({"read"}),
    ("POST", "/records/{id}/forward"): frozenset({"submit"}),
    ("POST", "/events/{id}/permissions"): frozenset({"submit"}),
    ("POST", "/cases/{case}/shred"): frozenset({"process"}),
}
"""The scopes that let a client call each operation (any one of them); /health needs none.
A forward and a permission send an event (``submit``); shredding acts on what the node received
and stored, as marking it processed does (``process``), so a read-only or submit-only client
cannot destroy a case."""

STATUS_OF_CODE = {"unauthenticated": 401, "forbidden": 403, "oversized": 413, "replay": 409,
                  "not_found": 404, "not_configured": 409, "handling_restricted": 403}
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
            *protection_api.routes(),
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
    return validate.json_body(await request.read())


async def post_event(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    doc = validate.event_document(await json_body(request))
    result = await submit_event(node, doc)
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
    cursor = store.page_cursor(page)
    page = protection_api.readable(request.app["node"], page)
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
