"""A whole CaseBridge network on this machine: trust, topics, router, tracker and nodes as processes.

Used by ``casebridge demo`` and the end-to-end integration tests. Each service is a real
``casebridge … run`` process against a real broker; their logs go to ``<home>/logs``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from casebridge.core import access
from casebridge.node import auth
from casebridge.runtime import acl
from casebridge.runtime.settings import Settings
from casebridge.runtime.topics import network_topics, sync_topics
from casebridge.runtime.world import World, bootstrap_network

RESTART_EXIT = 75  # EX_TEMPFAIL: a worker asks its supervisor to start it again (router: fenced)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int | None = None
    args: tuple[str, ...] = ()
    extra_env: Mapping[str, str] | None = None
    principal: str | None = None


@dataclass
class LocalNet:
    """Handles on the running processes; ``stop`` ends them all."""

    settings: Settings
    world: World
    services: dict[str, Service] = field(default_factory=dict)
    restarts: Counter[str] = field(default_factory=Counter)  # by the supervisor, per service
    _logs: list[IO[bytes]] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _supervisor: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    tokens: dict[str, str] = field(default_factory=dict)  # node -> the API token of client "localnet"
    placement: dict[str, dict[str, str]] = field(default_factory=dict)  # country -> its cluster's env

    def env(self, principal: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A service's environment; on a secured cluster, its own Kafka user and password."""
        secured = {}
        if self.settings.sasl_username:
            secured = {"CASEBRIDGE_SASL_USERNAME": principal,
                       "CASEBRIDGE_SASL_PASSWORD": acl.password_of(self.settings.home, principal)}
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_SASL_")},
            "KAFKA_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
            "CASEBRIDGE_HOME": str(self.settings.home),
            "CASEBRIDGE_LOG_FORMAT": "json",
            "CASEBRIDGE_REPLICATION": str(self.settings.replication),
            "CASEBRIDGE_KAFKA_CA": self.settings.kafka_ca,
            **secured,
            **(extra or {}),
        }

    def spawn(
        self,
        name: str,
        args: Sequence[str],
        port: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        principal: str | None = None,
    ) -> Service:
        logs = self.settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{name}.log"
        handle = path.open("ab")
        self._logs.append(handle)
        process = subprocess.Popen(
            [sys.executable, "-m", "casebridge.cli", *args],
            env=self.env(principal or name, {"CASEBRIDGE_INSTANCE_ID": name, **(extra_env or {})}),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        service = Service(name, process, path, port, tuple(args), extra_env, principal)
        with self._lock:
            self.services[name] = service
        return service

    def supervise(self, interval: float = 1.0) -> None:
        """Start a thread that starts again every service that exits with ``RESTART_EXIT`` (its
        own request); any other exit stays visible (``check_alive``)."""
        def loop() -> None:
            while not self._stopping.wait(interval):
                with self._lock:
                    for name, service in list(self.services.items()):
                        if service.process.poll() == RESTART_EXIT:
                            self.restarts[name] += 1
                            self.spawn(name, service.args, service.port, service.extra_env, service.principal)

        self._supervisor = threading.Thread(target=loop, name="localnet-supervisor", daemon=True)
        self._supervisor.start()

    def start_node(self, participant: str) -> Service:
        if participant not in self.tokens:
            self.tokens[participant] = add_api_client(self.settings.home, participant)
        port = free_port()
        return self.spawn(participant, ["node", "run", "--as", participant, "--port", str(port)], port,
                          self.placement.get(participant.split(".", 1)[0]))

    def token_file(self, participant: str) -> Path:
        """Where the node's API token for client ``localnet`` is kept (0600), for a person to use."""
        return auth.clients_file(self.settings.home, participant).with_name("localnet.token")

    def url(self, participant: str, path: str) -> str:
        port = self.services[participant].port
        return f"http://127.0.0.1:{port}{path}"

    def call(self, participant: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One HTTP call to a node's API: (status, decoded JSON)."""
        data = json.dumps(body, default=str).encode() if body is not None else None
        headers = {"content-type": "application/json"}
        if participant in self.tokens:
            headers["authorization"] = f"Bearer {self.tokens[participant]}"
        request = urllib.request.Request(  # noqa: S310 - http on loopback only
            self.url(participant, path), data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        for name, service in self.services.items():
            while service.port is not None:
                self.check_alive(name)
                try:
                    if self.call(name, "GET", "/health")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} did not answer on /health; see {service.log}")
                time.sleep(0.3)

    def check_alive(self, name: str) -> None:
        service = self.services[name]
        if service.process.poll() is not None:
            tail = "\n".join(service.log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{name} exited with {service.process.returncode}:\n{tail}")

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        with self._lock:
            service = self.services.pop(name)
        _end(service.process, sig, timeout)

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)
        for name in list(self.services):
            self.stop_service(name)
        for handle in self._logs:
            handle.close()


def _end(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def add_api_client(home: Path, participant: str) -> str:
    """A client ``localnet`` of the node with every scope; its token, also kept in
    ``localnet.token`` beside the clients file (0600) for a person trying the API by hand."""
    path = auth.clients_file(home, participant)
    token = auth.new_token()
    clients = {k: v for k, v in auth.load_clients(path).items() if k != "localnet"}
    auth.save_clients(path, auth.add_client(clients, "localnet", auth.SCOPES, token, datetime.now(UTC)))
    secret = path.with_name("localnet.token")
    secret.touch(mode=0o600)
    secret.write_text(token + "\n")
    return token


def prepare(settings: Settings) -> World:
    """Trust material and topics for a fresh local network; on a secured cluster (``settings``
    carries the admin's SASL credentials) also every principal's user and ACLs."""
    world = bootstrap_network(settings.home, datetime.now(UTC))
    asyncio.run(sync_topics(settings, network_topics(world.directory.participants, settings.partitions),
                          settings.replication))
    if settings.sasl_username:
        participants = list(world.directory.participants)
        acl.sync(settings.bootstrap_servers, settings.sasl_password, settings.home,
                 access.grants_for(participants), access.principals(participants), settings.kafka_ca)
    return world


def start(settings: Settings, nodes: Sequence[str], tracker_env: Mapping[str, str] | None = None) -> LocalNet:
    """Router, deadline tracker and ``nodes``, each its own process, all answering."""
    net = LocalNet(settings, prepare(settings))
    net.supervise()
    try:
        net.spawn("router", ["router", "run"], principal=access.ROUTER)
        net.spawn("deadlines", ["deadlines", "run"], extra_env=tracker_env, principal=access.DEADLINES)
        port = free_port()
        net.spawn("monitor", ["monitor", "run", "--port", str(port)], port, principal=access.MONITOR)
        for participant in nodes:
            net.start_node(participant)
        net.wait_healthy()
    except BaseException:
        net.stop()
        raise
    return net
