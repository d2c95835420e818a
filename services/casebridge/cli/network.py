"""``casebridge trust|topics|router|node|inbox``: run the network's processes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casebridge.cli import protection as protection_cli
from casebridge.core import access
from casebridge.node import auth, protection, service, validate
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
    protection_cli.register_node(node)  # node shred | retention | forward | permit (cli/protection.py)
    run = node.add_parser("run", help="run a node worker with its HTTP API")
    run.add_argument("--as", dest="participant", required=True)
    run.add_argument("--port", type=int, default=8080)
    run.add_argument("--host", default=None,
                     help="address the HTTP API listens on (default $CASEBRIDGE_HTTP_HOST or 127.0.0.1)")
    run.set_defaults(func=cmd_node_run)
    register_clients(node)
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
    from casebridge.runtime import preflight as check

    check.reachable(settings)
    replication = args.replication or settings.replication
    specs = network_topics(world.directory.participants, settings.partitions)
    if settings.country:  # one member's cluster of a federation
        from casebridge.core.federation import Federation
        from casebridge.runtime.topics import cluster_topics

        specs = cluster_topics(Federation(settings.federation), settings.country,
                               world.directory.participants, settings.partitions)
    created = asyncio.run(sync_topics(settings, specs, replication))
    print(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))
    return 0


def preflight(settings: Settings, world: World, acting_as: str) -> None:
    """Stop now, with one clear line, if this principal cannot log in or lacks a right it needs."""
    from casebridge.runtime import preflight as check

    participants = list(world.directory.participants)
    if settings.country:  # one cluster of a federation: its topics, its policy
        from casebridge.core import federation
        from casebridge.runtime.topics import cluster_topics

        fed = federation.Federation(settings.federation)
        names = [spec.name for spec in cluster_topics(fed, settings.country, participants)]
        policy = federation.grants(fed, settings.country, participants)
        check.check_service(settings, acting_as, names, participants, policy)
        return
    names = [spec.name for spec in network_topics(participants)]
    check.check_service(settings, acting_as, names, participants)


def cmd_router_run(args: argparse.Namespace) -> int:
    from casebridge.router import loop

    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    world = load_world(settings.home, datetime.now(UTC))
    preflight(settings, world, access.ROUTER)
    return loop.run(settings, world, stop_on_signals())


def cmd_deadlines_run(args: argparse.Namespace) -> int:
    from casebridge.core.deadlines import parse_calendars
    from casebridge.deadlines import loop
    from casebridge.runtime.world import AGREEMENTS

    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    scale = args.scale if args.scale is not None else settings.deadline_scale
    calendars_file = AGREEMENTS / "calendars.yaml"
    calendars = parse_calendars(calendars_file.read_text(), str(calendars_file))
    world = load_world(settings.home, datetime.now(UTC))
    preflight(settings, world, access.DEADLINES)
    return loop.run(settings, world, calendars, scale, stop_on_signals())


STOP_WITHIN = 4.0  # seconds from SIGTERM to exit, under the 5 s a supervisor is promised


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: a stream worker ends its batch, leaves its group, exits.
    Should a Kafka call still block ``STOP_WITHIN`` seconds later (a broker gone mid-commit), the
    process ends anyway: the open transaction is aborted by its coordinator or by the next
    worker of the same id, so nothing is lost or delivered twice."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        timer = threading.Timer(STOP_WITHIN, force_exit, (signum,))
        timer.daemon = True
        timer.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    return stop


def force_exit(signum: int) -> None:
    sys.stderr.write(f"casebridge: stop forced {STOP_WITHIN:.0f} s after {signal.Signals(signum).name}\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def cmd_node_run(args: argparse.Namespace) -> int:
    from casebridge.node import pump

    settings = Settings.from_env()
    if args.host:
        settings = replace(settings, http_host=args.host)
    world = load_world(settings.home, datetime.now(UTC))
    preflight(settings, world, args.participant)
    configure_logging(settings.log_format, settings.log_level)
    return pump.run(settings, world, args.participant, args.port)


def cmd_node_submit(args: argparse.Namespace) -> int:
    from casebridge.node.app import open_store

    settings = Settings.from_env()
    world = load_world(settings.home, datetime.now(UTC))
    conn = open_store(settings.home, args.participant, settings.partitions)
    doc = validate.event_document(json.loads(args.event.read_text()))
    me = world.in_custody_of(args.participant).identity(args.participant)
    result = service.submit(world, me, conn, doc, datetime.now(UTC))
    print(json.dumps(result.__dict__, default=list))
    return 0 if result.status == "queued" else 1


def cmd_inbox(args: argparse.Namespace) -> int:
    from casebridge.node.app import node_db, open_store

    settings = Settings.from_env()
    conn = open_store(settings.home, args.participant)
    vault = protection.open_node_vault(settings, conn, node_db(settings.home, args.participant).parent)
    for record in protection.stored_records(vault, conn):  # decrypted, with their handling
        json.dump(record, sys.stdout)
        sys.stdout.write("\n")
    return 0


def register_clients(node: Any) -> None:
    """``casebridge node clients add|list|revoke``: who may call a node's HTTP API."""
    clients = node.add_parser("clients", help="the clients allowed to call a node's HTTP API").add_subparsers(
        dest="clients_action", required=True)
    add = clients.add_parser("add", help="add a client; prints its bearer token (shown this once)")
    add.add_argument("client_id")
    add.add_argument("--scopes", default="submit,read,process",
                     help=f"comma-separated, some of {','.join(auth.SCOPES)} (default: all)")
    add.set_defaults(func=cmd_clients_add)
    clients.add_parser("list", help="the node's clients and their scopes").set_defaults(func=cmd_clients_list)
    revoke = clients.add_parser("revoke", help="revoke a client's token (the node refuses it at once)")
    revoke.add_argument("client_id")
    revoke.set_defaults(func=cmd_clients_revoke)
    for action in clients.choices.values():
        action.add_argument("--as", dest="participant", required=True)


def cmd_clients_add(args: argparse.Namespace) -> int:
    path = auth.clients_file(Settings.from_env().home, args.participant)
    token = auth.new_token()
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    auth.save_clients(path, auth.add_client(auth.load_clients(path), args.client_id, scopes, token,
                                            datetime.now(UTC)))
    print(token)
    print(f"client {args.client_id} of {args.participant} ({', '.join(sorted(scopes))}): send "
          "'Authorization: Bearer <the token above>'; it is not shown again", file=sys.stderr)
    return 0


def cmd_clients_list(args: argparse.Namespace) -> int:
    clients = auth.load_clients(auth.clients_file(Settings.from_env().home, args.participant))
    for client in sorted(clients.values(), key=lambda c: c.client_id):
        state = f"revoked {client.revoked_at}" if client.revoked_at else "current"
        print(f"{client.client_id}\t{','.join(sorted(client.scopes))}\tadded {client.created_at}\t{state}")
    return 0


def cmd_clients_revoke(args: argparse.Namespace) -> int:
    path = auth.clients_file(Settings.from_env().home, args.participant)
    auth.save_clients(path, auth.revoke_client(auth.load_clients(path), args.client_id, datetime.now(UTC)))
    print(f"client {args.client_id} of {args.participant} revoked")
    return 0
