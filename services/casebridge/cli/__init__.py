"""``casebridge`` command line: a thin shell over the packages; each group registers itself here.

Every command returns a process exit code; a ``CaseBridgeError`` becomes one line on stderr with
its stable code and exit status 2, never a traceback; 75 (EX_TEMPFAIL) when it is temporary
(``kafka_unreachable``: the brokers did not answer), so that a supervisor starts the service again.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from casebridge import __version__
from casebridge.cli import broker, demo, envelope, federation, monitor, network, policy, security, stats
from casebridge.core.errors import CaseBridgeError

GROUPS = (broker, demo, federation, network, envelope, policy, monitor, security, stats)

TEMPFAIL = 75  # EX_TEMPFAIL, as a worker fenced for good exits: a supervisor tries again
TEMPORARY = frozenset({"kafka_unreachable"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="casebridge", description="Sealed, agreement-routed case events across borders."
    )
    parser.add_argument("--version", action="version", version=f"casebridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # local state (keys, stores, logs) is for this user only
    try:
        code: int = args.func(args)
    except CaseBridgeError as exc:
        print(f"casebridge: error [{exc.code}]: {exc.why}", file=sys.stderr)
        return TEMPFAIL if exc.code in TEMPORARY else 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
