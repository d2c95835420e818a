"""``casebridge demo --federated`` and ``casebridge federation up | down | status``.

The demo case of ``demo.scenario`` run across a federation (``demo.federation``): TH's and KH's
clusters and the secretariat's, each with its own MirrorMaker 2, router, tracker and nodes. It
prints what each cluster holds and how many records each corridor carried, and exits 0 only if
every delivery, receipt and refusal of the ordinary demo happened.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from casebridge.core import topics
from casebridge.core.model import REGION
from casebridge.demo import federation, scenario
from casebridge.demo.run import BREACH_AFTER_SECONDS, VERIFICATION_DAYS, run_all, say
from casebridge.localkafka.broker import progress_to_stderr as progress
from casebridge.monitor import view
from casebridge.monitor.app import figures_from_topic
from casebridge.runtime.settings import Settings


def home_of(settings: Settings) -> Path:
    return settings.home / "federation"


def cmd_federated_demo(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    home = home_of(settings)
    federation.down(home, progress)  # one an earlier run left behind
    shutil.rmtree(home, ignore_errors=True)
    scale = BREACH_AFTER_SECONDS / (VERIFICATION_DAYS * 86400)
    say(f"starting a federation of {', '.join(federation.MEMBERS)}: one cluster and one MirrorMaker 2 "
        f"each, routers, trackers and {len(scenario.DEMO_NODES)} nodes (logs in {home / 'logs'}) ...")
    running = federation.up(replace(settings, home=home), scenario.DEMO_NODES, progress,
                            tracker_env={"CASEBRIDGE_DEADLINE_SCALE": f"{scale:.3e}"})
    ok = False
    try:
        say("")
        ok = run_all(running.net)
        show_holdings(running)
        show_monitor(running)
        if args.keep:
            say(f"\nThe federation keeps running; stop it with: casebridge federation down "
                f"(CASEBRIDGE_HOME={settings.home})")
    finally:
        if not args.keep:
            running.stop(progress)
    say(f"\ndemo --federated {'OK' if ok else 'FAILED'}: every expected delivery, receipt and refusal "
        f"{'happened across the federation' if ok else 'did NOT happen (see above and the logs)'}")
    return 0 if ok else 1


def show_holdings(running: federation.Federation) -> None:
    """Per cluster: the CaseBridge topics it holds (records in each), and per corridor what was
    written at the origin and what the destination's MirrorMaker copied."""
    held = federation.holdings(running)
    say("\nWhat each cluster holds (committed records per topic):")
    for member, counts in held.items():
        shown = ", ".join(f"{t} {n}" for t, n in counts.items() if t.startswith("cb.") or ".cb." in t)
        say(f"  {member}: {shown}")
    say("Corridors (written at the origin -> mirrored into the destination):")
    for member in running.fed.members:
        for name in running.fed.incoming_corridors(member):
            ends = topics.corridor_ends(name)
            assert ends is not None
            origin = held.get(ends[0], {}).get(topics.corridor(*ends), 0)
            say(f"  {ends[0]} -> {ends[1]}: {origin} -> {held.get(member, {}).get(name, 0)}")


def show_monitor(running: federation.Federation) -> None:
    """The secretariat's view, from its own cluster: cb.audit and every member's mirrored audit."""
    reg = running.clusters[REGION].settings
    figures = asyncio.run(figures_from_topic(reg, running.net.world.schemas, datetime.now(UTC)))
    say("\nThe secretariat's monitor, on its own cluster (metadata only, mirrored audits):")
    for line in view.summary(figures):
        say(f"  {line}")
    say(f"  monitor page: {running.net.url('monitor', '/')}")


def cmd_up(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    home = home_of(settings)
    if (home / federation.STATE_FILE).exists():
        say(f"a federation is already up under {home}: `casebridge federation down` first")
        return 2
    shutil.rmtree(home, ignore_errors=True)
    members = tuple(args.members.split(","))
    nodes = tuple(n for n in args.nodes.split(",") if n)
    running = federation.up(replace(settings, home=home), nodes, progress, members)
    for member, cluster in running.clusters.items():
        say(f"{member}: Kafka at {cluster.settings.bootstrap_servers}")
    for name in nodes:
        say(f"{name}: {running.net.url(name, '/')}  (bearer token in {running.net.token_file(name)})")
    say(f"monitor: {running.net.url('monitor', '/')}")
    say("stop it all with: casebridge federation down")
    # the services run detached; this command's supervisor thread ends with it
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    home = home_of(Settings.from_env())
    started = time.monotonic()
    stopped = federation.down(home, progress)
    say(f"stopped {stopped} processes in {time.monotonic() - started:.1f} s" if stopped
        else f"no federation is up under {home}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("federation", help="a federation of national clusters on this machine")
    commands = group.add_subparsers(dest="federation_command", required=True)
    start = commands.add_parser("up", help="start the clusters, MirrorMakers, routers and nodes")
    start.add_argument("--members", default=",".join(federation.MEMBERS),
                       help="the clusters: REG and countries (default: %(default)s)")
    start.add_argument("--nodes", default=",".join(scenario.DEMO_NODES),
                       help="the nodes to start, on their country's cluster (default: %(default)s)")
    start.set_defaults(func=cmd_up)
    stop = commands.add_parser("down", help="stop everything `federation up` started")
    stop.set_defaults(func=cmd_down)

