"""The node API's protection routes (registered by ``node.app.http_app``).

``GET /records/{id}``: one stored record, decrypted, with its handling code (and H3 conditions);
``410 Gone`` with its metadata only once its case was shredded. ``POST /cases/{case}/shred``
with ``{"reason": <code>}`` shreds a case (``casebridge node shred`` does the same).
``POST /records/{id}/forward`` with ``{"to": [...]}`` passes a received record on (refused
``handling_restricted`` for H2 without the provider's permission); ``POST /events/{id}/permissions``
with ``{"forwarder": P, "to": [...]}`` is the provider granting that permission.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from casebridge.core.errors import CaseBridgeError
from casebridge.node import protection
from casebridge.node.vault import Vault
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings

log = get_logger("casebridge.node")

STATUS = {"found": 200, "shredded": 410, "missing": 404}


def open_node_vault(settings: Settings, conn: sqlite3.Connection, folder: Path) -> Vault:
    return protection.open_node_vault(settings, conn, folder)


def readable(node: Any, page: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Inbox records as the API shows them: decrypted, with their handling."""
    return [protection.readable(node.vault, node.conn, record) for record in page]


def routes() -> list[web.RouteDef]:
    return [web.get("/records/{id}", get_record), web.post("/cases/{case}/shred", post_shred),
            web.post("/records/{id}/forward", post_forward),
            web.post("/events/{id}/permissions", post_permission)]


async def get_record(request: web.Request) -> web.Response:
    node = request.app["node"]
    read = protection.read_record(node.vault, node.conn, request.match_info["id"])
    return web.json_response(read.body, status=STATUS[read.outcome])


async def post_shred(request: web.Request) -> web.Response:
    node = request.app["node"]
    if node.vault is None:
        return web.json_response({"code": "not_configured", "why": "no vault"}, status=409)
    try:
        doc = await request.json()
        if not isinstance(doc, dict):
            raise ValueError("the body must be an object with a 'reason'")
        result, notice = protection.shred_case(node.world, node.me, node.conn, node.vault,
                                               request.match_info["case"], str(doc.get("reason")),
                                               datetime.now(UTC))
    except CaseBridgeError as exc:
        return web.json_response({"code": exc.code, "why": exc.why}, status=400)
    except ValueError as exc:
        return web.json_response({"code": "malformed", "why": str(exc)}, status=400)
    node.wake.set()
    log.info("shredded", participant=node.me.participant, case_ref=result.case_ref, reason=result.reason,
             records=result.records, keys=result.keys, notice_event_id=notice.event_id)
    return web.json_response({"case_ref": result.case_ref, "reason": result.reason,
                              "records": result.records, "keys": result.keys,
                              "notice_event_id": notice.event_id, "notice_status": notice.status})


async def json_body(request: web.Request) -> dict[str, Any]:
    doc = await request.json()
    if not isinstance(doc, dict) or not isinstance(doc.get("to"), list) or not all(
            isinstance(x, str) for x in doc["to"]):
        raise ValueError("the body must be an object with a list of addressees in 'to'")
    return doc


def submitted(result: Any) -> web.Response:
    if result is None:
        return web.json_response({"code": "not_found"}, status=404)
    body = {"event_id": result.event_id, "status": result.status, "code": result.code,
            "why": result.why, "recipients": list(result.recipients)}
    return web.json_response(body, status=202 if result.status == "queued" else 422)


async def post_forward(request: web.Request) -> web.Response:
    node = request.app["node"]
    try:
        doc = await json_body(request)
        result = protection.request_forward(node.world, node.me, node.conn, node.vault,
                                            request.match_info["id"], doc["to"], datetime.now(UTC))
        log.info("forward", participant=node.me.participant, forward_of=request.match_info["id"],
                 to=doc["to"], event_id=result.event_id if result else None,
                 outcome=result.status if result else "not_found", code=result.code if result else None)
    except CaseBridgeError as exc:
        return web.json_response({"code": exc.code, "why": exc.why}, status=400)
    except ValueError as exc:
        return web.json_response({"code": "malformed", "why": str(exc)}, status=400)
    node.wake.set()
    return submitted(result)


async def post_permission(request: web.Request) -> web.Response:
    node = request.app["node"]
    try:
        doc = await json_body(request)
        result = protection.grant_permission(node.world, node.me, node.conn, request.match_info["id"],
                                             str(doc.get("forwarder")), doc["to"], datetime.now(UTC))
        log.info("permission", participant=node.me.participant, for_event_id=request.match_info["id"],
                 forwarder=doc.get("forwarder"), to=doc["to"], event_id=result.event_id if result else None,
                 outcome=result.status if result else "not_found")
    except CaseBridgeError as exc:
        status = 403 if exc.code == "handling_restricted" else 400
        return web.json_response({"code": exc.code, "why": exc.why}, status=status)
    except ValueError as exc:
        return web.json_response({"code": "malformed", "why": str(exc)}, status=400)
    node.wake.set()
    return submitted(result)
