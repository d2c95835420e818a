"""``casebridge acl sync``: SCRAM users and ACLs on a secured cluster, derived from the directory."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casebridge.core import access
from casebridge.runtime import acl
from casebridge.runtime.settings import Settings
from casebridge.runtime.world import load_world


def register(sub: Any) -> None:
    parser = sub.add_parser("acl", help="Kafka users and ACLs derived from the directory")
    actions = parser.add_subparsers(dest="action", required=True)
    sync = actions.add_parser("sync", help="reconcile SCRAM users and ACLs with the directory (in a "
                              "federation: CASEBRIDGE_COUNTRY's cluster, CASEBRIDGE_FEDERATION's members)")
    sync.add_argument("--admin-secret", type=Path,
                      help="file holding the cluster admin password (default: the local secured "
                           "broker's $CASEBRIDGE_HOME/broker/admin.secret)")
    sync.set_defaults(func=cmd_sync)


def cmd_sync(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    world = load_world(settings.home, datetime.now(UTC))
    secret = (args.admin_secret or settings.broker_dir / "admin.secret").read_text().strip()
    participants = list(world.directory.participants)
    grants, principals = access.grants_for(participants), access.principals(participants)
    if settings.country:  # one member's cluster of a federation: its own users and grants
        from casebridge.core import federation

        fed = federation.Federation(settings.federation)
        grants = federation.grants(fed, settings.country, participants)
        principals = federation.principals(fed, settings.country, participants)
    report = acl.sync(settings.bootstrap_servers, secret, settings.home, grants, principals,
                      settings.kafka_ca)
    print(f"{report.users} SCRAM users ({report.users_deleted} removed); ACLs: {report.created} created, "
          f"{report.deleted} removed; passwords in {acl.secret_path(settings.home, 'X').parent}")
    return 0
