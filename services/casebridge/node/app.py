"""A country node: its state and the hub's HTTP API (the Kafka side is ``casebridge.node.pump``).

HTTP API (OpenAPI: ``deploy/openapi/node.yaml``): ``POST /events`` seals and queues an event,
``GET /events/{id}`` its status and receipts, ``GET /inbox`` the decrypted events addressed to
this participant (paged), ``POST /inbox/{id}/processed`` marks one handled (queues the signed
``receipt.processed``), ``GET /health``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from casebridge.core.errors import CaseBridgeError
from casebridge.core.keys import Identity
from casebridge.node import service, store
from casebridge.node.groupcommit import GroupCommit
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import World

log = get_logger("casebridge.node")


@dataclass
class Node:
    settings: Settings
    world: World
    me: Identity
    conn: sqlite3.Connection
    wake: threading.Event = field(default_factory=threading.Event)  # the publisher has work
    group: GroupCommit | None = None  # POST /events commits through it when set

    @property
    def participant(self) -> str:
        return self.me.participant


def node_db(home: Path, participant: str) -> Path:
    return home / "nodes" / participant / "node.sqlite"


async def submit_event(node: Node, doc: Mapping[str, Any]) -> service.Submitted:
    """Seal and queue one event, durably, with the next group commit (or alone without one)."""
    if node.group is None:
        return service.submit(node.world, node.me, node.conn, doc, datetime.now(UTC))
    return await node.group.submit(doc)


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
        ]
    )
    return api


async def post_event(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    try:
        doc = await request.json()
        result = await submit_event(node, doc)
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
    page = store.inbox_page(request.app["node"].conn, request.query.get("after", ""), limit)
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
