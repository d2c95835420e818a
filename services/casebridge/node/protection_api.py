"""The node API's protection routes (registered by ``node.app.http_app``, behind its ``guard``).

``GET /records/{id}``: one stored record, decrypted, with its handling code (and H3 conditions);
``410 Gone`` with its metadata only once its case was shredded. ``POST /cases/{case}/shred``
with ``{"reason": <code>}`` shreds a case (``casebridge node shred`` does the same).
``POST /records/{id}/forward`` with ``{"to": [...]}`` passes a received record on (refused
``handling_restricted`` for H2 without the provider's permission); ``POST /events/{id}/permissions``
with ``{"forwarder": P, "to": [...]}`` is the provider granting that permission.

Bodies are checked by ``node.validate``; every refusal is raised as a ``CaseBridgeError`` and
answered by the guard (its status from ``app.STATUS_OF_CODE``), as for the other routes.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from casebridge.core.errors import CaseBridgeError
from casebridge.node import protection, service, validate
from casebridge.node.vault import Vault
from casebridge.runtime.logging import get_logger
from casebridge.runtime.settings import Settings

log = get_logger("casebridge.node")


class NotFound(CaseBridgeError, LookupError):
    """No stored record, or no event of this node, has the id (HTTP 404)."""

    code = "not_found"


class NotConfigured(CaseBridgeError, RuntimeError):
    """The node has no key file, so it cannot shred (HTTP 409)."""

    code = "not_configured"


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
    if read.outcome == "missing":
        raise NotFound("no record in this node's inbox has this id")
    return web.json_response(read.body, status=410 if read.outcome == "shredded" else 200)


async def post_shred(request: web.Request) -> web.Response:
    node = request.app["node"]
    case_ref = request.match_info["case"]
    reason = validate.shred_request(case_ref, validate.json_body(await request.read()))
    if node.vault is None:
        raise NotConfigured("this node has no key file (at-rest encryption is not configured)")
    result, notice = protection.shred_case(node.world, node.me, node.conn, node.vault, case_ref, reason,
                                           datetime.now(UTC))
    node.wake.set()
    log.info("shredded", participant=node.me.participant, case_ref=result.case_ref, reason=result.reason,
             records=result.records, keys=result.keys, notice_event_id=notice.event_id)
    return web.json_response({"case_ref": result.case_ref, "reason": result.reason,
                              "records": result.records, "keys": result.keys,
                              "notice_event_id": notice.event_id, "notice_status": notice.status})


async def post_forward(request: web.Request) -> web.Response:
    node, record_id = request.app["node"], request.match_info["id"]
    to = validate.forward_request(validate.json_body(await request.read()))
    result = protection.request_forward(node.world, node.me, node.conn, node.vault, record_id, to,
                                        datetime.now(UTC))
    log.info("forward", participant=node.me.participant, forward_of=record_id, to=to,
             event_id=result.event_id if result else None,
             outcome=result.status if result else "not_found", code=result.code if result else None)
    if result is None:
        raise NotFound("no record in this node's inbox has this id")
    return submitted(node, result)


async def post_permission(request: web.Request) -> web.Response:
    node, event_id = request.app["node"], request.match_info["id"]
    forwarder, to = validate.permission_request(validate.json_body(await request.read()))
    result = protection.grant_permission(node.world, node.me, node.conn, event_id, forwarder, to,
                                         datetime.now(UTC))
    log.info("permission", participant=node.me.participant, for_event_id=event_id, forwarder=forwarder,
             to=to, event_id=result.event_id if result else None,
             outcome=result.status if result else "not_found")
    if result is None:
        raise NotFound("no event sent by this node has this id")
    return submitted(node, result)


def submitted(node: Any, result: service.Submitted) -> web.Response:
    """202 with the queued event (the publisher is woken), or 422 with its reject code."""
    if result.status == "queued":
        node.wake.set()
    body = {"event_id": result.event_id, "status": result.status, "code": result.code,
            "why": result.why, "recipients": list(result.recipients)}
    return web.json_response(body, status=202 if result.status == "queued" else 422)
