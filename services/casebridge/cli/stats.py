"""``casebridge stats export``: k-anonymous statistics from a node's own store (CSV + HTML page)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from casebridge.core import stats, statspage
from casebridge.core.model import country_of
from casebridge.node import protection, store
from casebridge.runtime.settings import Settings


def register(sub: Any) -> None:
    group = sub.add_parser("stats", help="statistics that cannot identify anyone").add_subparsers(
        dest="action", required=True)
    export = group.add_parser("export", help="k-anonymous counts of a node's cases (CSV and HTML)")
    export.add_argument("--as", dest="participant", required=True, help="the node whose store to count")
    export.add_argument("--out", type=Path, required=True, help="folder for stats.csv and stats.html")
    export.add_argument("--k", type=int, default=stats.MIN_K, help=f"at least {stats.MIN_K} (CTDC's rule)")
    export.set_defaults(func=cmd_stats_export)


def node_records(settings: Settings, participant: str) -> list[dict[str, Any]]:
    """Every inbox record of a node, decrypted (shredded cases keep their metadata only)."""
    from casebridge.node.app import node_db

    path = node_db(settings.home, participant)
    conn = store.connect(path)
    return protection.stored_records(protection.open_node_vault(settings, conn, path.parent), conn)


def cmd_stats_export(args: argparse.Namespace) -> int:
    facts = stats.case_facts(node_records(Settings.from_env(), args.participant),
                             country_of(args.participant))
    table = stats.export(facts, k=args.k)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stats.csv").write_text(statspage.to_csv(table))
    (args.out / "stats.html").write_text(statspage.to_html(table, f"Cases at {args.participant}"))
    print(f"{len(table.cells)} cells released (k = {table.k}), {table.suppressed_cells} cells "
          f"suppressed; wrote {args.out / 'stats.csv'} and {args.out / 'stats.html'}")
    return 0
