"""``casebridge node shred|retention|forward|permit``: protection on a node's own store.

Both work on the node's SQLite files directly (as ``node submit`` does); a running node publishes
the queued ``case.shredded`` notice with the rest of its outbox.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from casebridge.core import vault as vault_core
from casebridge.node import protection, store
from casebridge.runtime.settings import PROJECT_ROOT, Settings
from casebridge.runtime.world import load_world

RETENTION = PROJECT_ROOT / "deploy" / "retention.yaml"


def register_node(node: Any) -> None:
    """Add the protection actions to the ``casebridge node`` group."""
    shred = node.add_parser("shred", help="destroy a case's keys and stored content (crypto-shredding)")
    shred.add_argument("case_ref")
    shred.add_argument("--as", dest="participant", required=True)
    shred.add_argument("--reason", required=True, choices=vault_core.SHRED_REASONS)
    shred.set_defaults(func=cmd_node_shred)
    keep = node.add_parser("retention", help="destroy the categories whose retention class ran out")
    keep.add_argument("--as", dest="participant", required=True)
    keep.add_argument("--classes", type=Path, default=RETENTION, help="retention classes (YAML)")
    keep.set_defaults(func=cmd_node_retention)
    fwd = node.add_parser("forward", help="pass a received record on (H2 needs the provider's permission)")
    fwd.add_argument("event_id")
    fwd.add_argument("--as", dest="participant", required=True)
    fwd.add_argument("--to", action="append", required=True, help="an addressee (repeat for more)")
    fwd.set_defaults(func=cmd_node_forward)
    permit = node.add_parser("permit", help="as its provider, let a recipient forward one of our events")
    permit.add_argument("event_id")
    permit.add_argument("--as", dest="participant", required=True)
    permit.add_argument("--forwarder", required=True, help="the participant that received it")
    permit.add_argument("--to", action="append", required=True, help="a permitted addressee (repeat)")
    permit.set_defaults(func=cmd_node_permit)


def opened(settings: Settings, participant: str) -> tuple[Any, Any]:
    from casebridge.node.app import node_db

    path = node_db(settings.home, participant)
    conn = store.connect(path)
    return conn, protection.open_node_vault(settings, conn, path.parent)


def cmd_node_shred(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    now = datetime.now(UTC)
    world = load_world(settings.home, now)
    conn, v = opened(settings, args.participant)
    result, notice = protection.shred_case(world, world.identity(args.participant), conn, v,
                                           args.case_ref, args.reason, now)
    print(json.dumps({"case_ref": result.case_ref, "reason": result.reason, "records": result.records,
                      "keys": result.keys, "notice": notice.status, "notice_event_id": notice.event_id}))
    return 0 if notice.status == "queued" else 1


def cmd_node_retention(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    classes = vault_core.parse_retention(yaml.safe_load(args.classes.read_text()) or {})
    conn, v = opened(settings, args.participant)
    done = protection.apply_retention(v, conn, classes, datetime.now(UTC))
    print(json.dumps({"expired": done}))
    return 0


def show(result: Any) -> int:
    if result is None:
        print(json.dumps({"code": "not_found"}))
        return 1
    print(json.dumps(result.__dict__, default=list))
    return 0 if result.status == "queued" else 1


def cmd_node_forward(args: argparse.Namespace) -> int:
    settings, now = Settings.from_env(), datetime.now(UTC)
    world = load_world(settings.home, now)
    conn, v = opened(settings, args.participant)
    return show(protection.request_forward(world, world.identity(args.participant), conn, v,
                                           args.event_id, args.to, now))


def cmd_node_permit(args: argparse.Namespace) -> int:
    settings, now = Settings.from_env(), datetime.now(UTC)
    world = load_world(settings.home, now)
    conn, _ = opened(settings, args.participant)
    return show(protection.grant_permission(world, world.identity(args.participant), conn,
                                            args.event_id, args.forwarder, args.to, now))
