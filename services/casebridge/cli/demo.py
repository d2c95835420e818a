"""``casebridge demo``: the command; the bootstrap and the scenario live in ``casebridge.demo``."""

from __future__ import annotations

from typing import Any

from casebridge.demo.run import cmd_demo


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run a whole cross-border case on a local network")
    parser.add_argument("--keep", action="store_true",
                        help="leave the network running at the end (stop it with --stop)")
    parser.add_argument("--stop", action="store_true",
                        help="stop the network an earlier --keep left running, and exit")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="run the broker without SASL/ACLs (default: secured, each service its own user)",
    )
    parser.add_argument(
        "--federated",
        action="store_true",
        help="run it across a federation: TH's, KH's and the secretariat's own clusters, joined by "
             "MirrorMaker 2",
    )
    parser.set_defaults(func=cmd_demo)
