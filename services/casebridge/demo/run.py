"""The bootstrap of ``casebridge demo``: the README's main job — a whole repatriation case on a real broker.

It starts a fresh broker of its own on free loopback ports (unless ``KAFKA_BOOTSTRAP_SERVERS``
names one: then the topics may hold earlier runs, which the monitor's figures count), makes fresh trust
material under ``$CASEBRIDGE_HOME/demo``, starts the router, the deadline tracker (on a shortened
clock) and the nodes of TH.MSDHS, TH.RTP, KH.MOSVY, KH.MOI and KH.CWCC as processes, and runs
the case of ``demo.scenario``. It exits 0 only if every expected delivery, receipt and
refusal happened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from casebridge.demo import localnet, scenario
from casebridge.localkafka import broker
from casebridge.localkafka.broker import progress_to_stderr as progress
from casebridge.monitor import view
from casebridge.monitor.app import figures_from_topic
from casebridge.runtime.settings import Settings

BREACH_AFTER_SECONDS = 15.0
VERIFICATION_DAYS = 42.0  # 30 working days, in calendar days (about)


def cmd_demo(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if getattr(args, "federated", False) and not args.stop:
        from casebridge.demo.federated import cmd_federated_demo

        return cmd_federated_demo(args)
    stopped = stop_kept(settings.home, say)  # a network an earlier ``--keep`` left running
    if args.stop:
        if not stopped:
            say(f"no demo network left running under {settings.home}")
        return 0
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
        if args.keep:
            keep(net, spec.state_dir if spec is not None else None)
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
    protection_ok = scenario.run_protection(net, schemas, say)
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


KEPT_FILE = "demo-kept.json"
"""Under ``$CASEBRIDGE_HOME``: the processes a ``demo --keep`` left running, for ``demo --stop``."""


def keep(net: localnet.LocalNet, broker_dir: Path | None) -> None:
    """Note what stays running and say how to use it and how to stop it."""
    kept = {"services": {name: s.process.pid for name, s in net.services.items()},
            "broker_dir": str(broker_dir) if broker_dir is not None else None}
    home = net.settings.home.parent
    (home / KEPT_FILE).write_text(json.dumps(kept, indent=1) + "\n")
    say("\nThe network keeps running:")
    for name in scenario.DEMO_NODES:
        say(f"  {name}: {net.url(name, '/')}  (bearer token in {net.token_file(name)})")
    say(f"  monitor page: {net.url('monitor', '/')}")
    prefix = f"CASEBRIDGE_HOME={home} " if "CASEBRIDGE_HOME" in os.environ else ""
    say(f"Stop it with: {prefix}casebridge demo --stop")


def stop_kept(home: Path, say: Callable[[str], None], timeout: float = 10.0) -> int:
    """End the services (and the demo's own broker) that ``demo --keep`` left running under
    ``home``; the number of processes stopped. Only processes that are still ``casebridge``
    commands are signalled (a pid may have been reused since)."""
    path = home / KEPT_FILE
    if not path.exists():
        return 0
    kept = json.loads(path.read_text())
    pids = [pid for pid in kept.get("services", {}).values() if is_casebridge(pid)]
    for pid in pids:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(is_casebridge(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if is_casebridge(pid):
            signal_group(pid, signal.SIGKILL)
    stopped = len(pids)
    if kept.get("broker_dir"):
        settings = Settings.from_env()
        spec = broker.BrokerSpec(state_dir=Path(kept["broker_dir"]), cache_dir=settings.kafka_cache,
                                 pom=settings.kafka_pom)
        stopped += broker.stop(spec, progress)
    path.unlink()
    say(f"stopped the demo network that --keep left running ({stopped} processes)")
    return stopped


def is_casebridge(pid: int) -> bool:
    """Whether ``pid`` is a live, non-zombie process running a ``casebridge`` command."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and b"casebridge" in cmdline


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
