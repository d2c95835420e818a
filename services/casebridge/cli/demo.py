"""``casebridge demo``: the README's main job — a whole repatriation case on a real broker.

It starts a fresh broker of its own on free loopback ports (unless ``KAFKA_BOOTSTRAP_SERVERS``
names one: then the topics may hold earlier runs, which the monitor's figures count), makes fresh trust
material under ``$CASEBRIDGE_HOME/demo``, starts the router, the deadline tracker (on a shortened
clock) and the nodes of TH.MSDHS, TH.RTP, KH.MOSVY, KH.MOI and KH.CWCC as processes, and runs
the case of ``runtime.scenario``. It exits 0 only if every expected delivery, receipt and
refusal happened.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from casebridge.cli.broker import progress
from casebridge.monitor import view
from casebridge.monitor.app import figures_from_topic
from casebridge.runtime import broker, localnet, scenario
from casebridge.runtime.settings import Settings

BREACH_AFTER_SECONDS = 15.0
VERIFICATION_DAYS = 42.0  # 30 working days, in calendar days (about)


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run a whole cross-border case on a local network")
    parser.add_argument("--keep", action="store_true", help="leave the network running at the end")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="run the broker without SASL/ACLs (default: secured, each service its own user)",
    )
    parser.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    spec = None
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        spec = broker.BrokerSpec(  # a broker of its own, on free ports: the demo starts from empty topics
            state_dir=settings.home / "demo-broker",
            cache_dir=settings.kafka_cache,
            pom=settings.kafka_pom,
            base_port=broker.free_base_port(),
            secure=not args.insecure,
        )
        broker.stop(spec, progress)
        shutil.rmtree(spec.state_dir, ignore_errors=True)
        settings = replace(settings, bootstrap_servers=broker.start(spec, progress))
        if spec.secure:  # every service then logs in as its own principal (acl sync in prepare)
            settings = replace(
                settings, sasl_username=broker.ADMIN, sasl_password=broker.admin_password(spec)
            )
    home = settings.home / "demo"
    shutil.rmtree(home, ignore_errors=True)
    settings = replace(settings, home=home)
    scale = BREACH_AFTER_SECONDS / (VERIFICATION_DAYS * 86400)
    say(
        f"Kafka at {settings.bootstrap_servers} "
        f"({'SASL/SCRAM + ACLs' if settings.sasl_username else 'no auth'}); "
        "starting router, deadline tracker and "
        f"{len(scenario.DEMO_NODES)} nodes (logs in {home / 'logs'}) ..."
    )
    started = time.monotonic()
    net = localnet.start(settings, scenario.DEMO_NODES, {"CASEBRIDGE_DEADLINE_SCALE": f"{scale:.3e}"})
    try:
        say(f"network up in {time.monotonic() - started:.1f} s\n")
        ok = run_all(net)
        show_monitor(net, args.keep)
    finally:
        if not args.keep:
            net.stop()
            if spec is not None:
                broker.stop(spec, progress)
    say(
        f"\ndemo {'OK' if ok else 'FAILED'}: every expected delivery, receipt and refusal "
        f"{'happened' if ok else 'did NOT happen (see above and the logs)'}"
    )
    return 0 if ok else 1


def run_all(net: localnet.LocalNet) -> bool:
    schemas = net.world.schemas
    case_ok, _ = scenario.run_case(net, schemas, say)
    say("")
    misdirected_ok = scenario.run_misdirected(net, net.world, say)
    say("")
    breach_ok = scenario.run_breach(net, schemas, say)
    say("")
    protection_ok = scenario.run_protection(net, schemas, say)  # issue 14
    return case_ok and misdirected_ok and breach_ok and protection_ok


def show_monitor(net: localnet.LocalNet, keep: bool) -> None:
    """The secretariat's view of what just happened: metadata only."""
    figures = asyncio.run(figures_from_topic(net.settings, net.world.schemas, datetime.now(UTC)))
    say("\nThe secretariat's monitor (metadata only):")
    for line in view.summary(figures):
        say(f"  {line}")
    url = net.url("monitor", "/")
    say(f"  monitor page: {url}" + ("" if keep else "  (run `casebridge demo --keep` to keep it up)"))


def say(message: str) -> None:
    print(message, file=sys.stdout, flush=True)
