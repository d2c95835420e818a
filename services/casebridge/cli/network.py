"""``casebridge trust|topics|router|node|inbox``: run the network's processes."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust

from casebridge.core import access
from casebridge.node import service, store
from casebridge.runtime.logging import configure_logging
from casebridge.runtime.settings import Settings
from casebridge.runtime.topics import network_topics, sync_topics
from casebridge.runtime.world import World, bootstrap_network, load_world


def register(sub: Any) -> None:
    sub.add_parser(
        "trust",
        help="make keys, a signed directory and signed agreements for a local "
        "network under $CASEBRIDGE_HOME/trust",
    ).set_defaults(func=cmd_trust)
    topics = sub.add_parser("topics", help="create the network's topics").add_subparsers(
        dest="action", required=True
    )
    sync = topics.add_parser("sync", help="create every topic the directory implies")
    sync.add_argument("--replication", type=int, default=None,
                      help="replicas per topic (default: CASEBRIDGE_REPLICATION, else 1)")
    sync.set_defaults(func=cmd_topics_sync)
    router = sub.add_parser("router", help="the MOU router").add_subparsers(dest="action", required=True)
    router.add_parser("run", help="run the router worker").set_defaults(func=cmd_router_run)
    deadlines = sub.add_parser("deadlines", help="the deadline tracker").add_subparsers(
        dest="action", required=True
    )
    track = deadlines.add_parser("run", help="run the tracker worker")
    track.add_argument(
        "--scale",
        type=float,
        default=None,
        help="shorten every clock by this factor (demo); default $CASEBRIDGE_DEADLINE_SCALE or 1",
    )
    track.set_defaults(func=cmd_deadlines_run)
    node = sub.add_parser("node", help="a country node").add_subparsers(dest="action", required=True)
    run = node.add_parser("run", help="run a node worker with its HTTP API")
    run.add_argument("--as", dest="participant", required=True)
    run.add_argument("--port", type=int, default=8080)
    run.set_defaults(func=cmd_node_run)
    submit = node.add_parser("submit", help="queue an event (JSON file) in a node's outbox")
    submit.add_argument("--as", dest="participant", required=True)
    submit.add_argument("event", type=Path)
    submit.set_defaults(func=cmd_node_submit)
    inbox = sub.add_parser("inbox", help="list the events in a node's inbox")
    inbox.add_argument("--as", dest="participant", required=True)
    inbox.set_defaults(func=cmd_inbox)


def cmd_trust(args: argparse.Namespace) -> int:
    world = bootstrap_network(Settings.from_env().home, datetime.now(UTC))
    print(
        f"trust material in {world.trust_dir}: {len(world.directory.participants)} participants, "
        f"{len(world.agreements)} signed agreements"
    )
    return 0


def cmd_topics_sync(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    world = load_world(settings.home, datetime.now(UTC))
    replication = args.replication or settings.replication
    created = asyncio.run(sync_topics(settings, network_topics(world.directory.participants), replication))
    print(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))
    return 0


def run_worker(app: faust.App, settings: Settings) -> int:
    configure_logging(settings.log_format, settings.log_level)
    worker = faust.Worker(app, loglevel="warning", quiet=True)
    # faust's progress spinner sets the root logger to DEBUG so that it turns on every record: each
    # debug call of aiokafka and faust then built a LogRecord (7% of the router's CPU, py-spy)
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


def preflight(settings: Settings, world: World, acting_as: str) -> None:
    """Stop now, with one clear line, if this principal cannot log in or lacks a right it needs."""
    from casebridge.runtime import preflight as check

    participants = list(world.directory.participants)
    names = [spec.name for spec in network_topics(participants)]
    check.check_service(settings, acting_as, names, participants)


def cmd_router_run(args: argparse.Namespace) -> int:
    from casebridge.router.app import create_router

    settings = Settings.from_env()
    world = load_world(settings.home, datetime.now(UTC))
    preflight(settings, world, access.ROUTER)
    return run_worker(create_router(settings, world), settings)


def cmd_deadlines_run(args: argparse.Namespace) -> int:
    from casebridge.core.deadlines import parse_calendars
    from casebridge.router.deadlines import create_tracker
    from casebridge.runtime.world import AGREEMENTS

    settings = Settings.from_env()
    scale = args.scale if args.scale is not None else settings.deadline_scale
    calendars_file = AGREEMENTS / "calendars.yaml"
    calendars = parse_calendars(calendars_file.read_text(), str(calendars_file))
    world = load_world(settings.home, datetime.now(UTC))
    preflight(settings, world, access.DEADLINES)
    return run_worker(create_tracker(settings, world, calendars, scale), settings)


def cmd_node_run(args: argparse.Namespace) -> int:
    from casebridge.node import pump

    settings = Settings.from_env()
    world = load_world(settings.home, datetime.now(UTC))
    preflight(settings, world, args.participant)
    configure_logging(settings.log_format, settings.log_level)
    return pump.run(settings, world, args.participant, args.port)


def cmd_node_submit(args: argparse.Namespace) -> int:
    from casebridge.node.app import node_db

    settings = Settings.from_env()
    world = load_world(settings.home, datetime.now(UTC))
    conn = store.connect(node_db(settings.home, args.participant), settings.partitions)
    result = service.submit(
        world, world.identity(args.participant), conn, json.loads(args.event.read_text()), datetime.now(UTC)
    )
    print(json.dumps(result.__dict__, default=list))
    return 0 if result.status == "queued" else 1


def cmd_inbox(args: argparse.Namespace) -> int:
    from casebridge.node.app import node_db

    conn = store.connect(node_db(Settings.from_env().home, args.participant))
    for record in store.inbox_page(conn, "", 500):
        json.dump(record, sys.stdout)
        sys.stdout.write("\n")
    return 0
