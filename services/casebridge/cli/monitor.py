"""``casebridge monitor run`` and ``casebridge audit verify|dump``: the secretariat's view."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from casebridge.cli.envelope import default_schemas
from casebridge.core import topics
from casebridge.monitor import audit, chains
from casebridge.runtime.logging import configure_logging
from casebridge.runtime.settings import Settings


def register(sub: Any) -> None:
    monitor = sub.add_parser("monitor", help="the secretariat's monitor").add_subparsers(
        dest="action", required=True)
    run = monitor.add_parser("run", help="run the monitor worker with its web page and /metrics")
    run.add_argument("--port", type=int, default=8090)
    run.add_argument("--host", default=None,
                     help="address to listen on (default $CASEBRIDGE_HTTP_HOST or 127.0.0.1)")
    run.add_argument("--bucket-seconds", type=int, default=60, help="width of a time bucket")
    audit_topics(run)
    run.set_defaults(func=cmd_monitor_run)
    group = sub.add_parser("audit", help="the audit stream").add_subparsers(dest="action", required=True)
    verify = group.add_parser("verify", help="check every sender's hash chain and sequence numbers")
    verify.add_argument("--file", type=Path, help="a JSON-lines audit file instead of the topics")
    audit_topics(verify)
    verify.add_argument("--json", action="store_true", help="print the findings as JSON")
    verify.set_defaults(func=cmd_audit_verify)
    dump = group.add_parser("dump", help="write the audit topics to a JSON-lines file")
    dump.add_argument("out", type=Path)
    audit_topics(dump)
    dump.set_defaults(func=cmd_audit_dump)


def audit_topics(parser: Any) -> None:
    """``--topic`` (one topic) or ``--topic-pattern`` (a regex the whole topic name must match)."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--topic", help="read this one audit topic only")
    which.add_argument("--topic-pattern", type=regex, default=audit.AUDIT_PATTERN,
                       help="read every topic this regular expression matches in full; the default "
                            "takes cb.audit and each <alias>.cb.audit MirrorMaker 2 copied from a "
                            "country's cluster (new ones are picked up while the monitor runs)")


def regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {exc}") from None
    return text


def pattern_of(args: argparse.Namespace) -> str:
    return audit.literal(args.topic) if args.topic else str(args.topic_pattern)


def cmd_monitor_run(args: argparse.Namespace) -> int:
    from casebridge.core import access
    from casebridge.monitor import app
    from casebridge.runtime import preflight

    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    pattern = pattern_of(args)
    # the login and the rights on the one audit topic every cluster has; the follower finds the
    # others itself (a SCRAM user just made may not log in for a moment: preflight retries, a
    # topic listing before it would not)
    preflight.check(settings, access.MONITOR, {args.topic or topics.AUDIT: {"read", "describe"}})
    return app.run(settings, default_schemas(settings), args.port, timedelta(seconds=args.bucket_seconds),
                   args.host or settings.http_host, pattern)


def load(args: argparse.Namespace) -> audit.AuditLog:
    if args.file is not None:
        return audit.read_file(args.file)
    settings = Settings.from_env()
    return asyncio.run(audit.read_topics(settings, default_schemas(settings), pattern_of(args)))


def cmd_audit_verify(args: argparse.Namespace) -> int:
    log = load(args)
    statuses = chains.check(log.partitions)
    if args.json:
        doc = {"undecodable": list(log.undecodable), "chains": [
            {"sender": s.sender, "partition": s.partition, "status": s.status, "links": s.links,
             "last_sequence": s.last_sequence,
             "findings": [vars(f) for f in s.findings]} for s in statuses]}
        print(json.dumps(doc, indent=1))
    else:
        print("\n".join(audit.report(log, statuses) or ["no chained records"]))
    return audit.verdict(log, statuses)


def cmd_audit_dump(args: argparse.Namespace) -> int:
    log = load(argparse.Namespace(file=None, topic=args.topic, topic_pattern=args.topic_pattern))
    print(f"wrote {audit.write_file(args.out, log)} records to {args.out}"
          + (f" ({len(log.undecodable)} undecodable skipped)" if log.undecodable else ""))
    return 0
