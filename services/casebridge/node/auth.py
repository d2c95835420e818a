"""Who may call a node's HTTP API: per-client bearer tokens, stored hashed, with scopes.

Each client of a node (the hub's case system, a caseworker tool) has its own id, its scopes
(``submit``: POST /events and the status of its events; ``read``: GET /inbox and event status;
``process``: POST /inbox/{id}/processed) and the SHA-256 of its token. The token itself is shown
once, when the client is added (``casebridge node clients add``), and never stored or logged:
tokens are 256 random bits, so a plain hash is as strong as a slow one. The clients file is
``<home>/nodes/<participant>/clients.json`` (0600); the node reads it again when it changes, so a
revocation holds from the next request on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from casebridge.core.errors import CaseBridgeError

SCOPES: tuple[str, ...] = ("submit", "read", "process")
TOKEN_PREFIX = "cbt_"  # noqa: S105 - a marker that tells a token when seen, not a secret
CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Unauthenticated(CaseBridgeError, PermissionError):
    """No credential, or one that names no current client (HTTP 401)."""

    code = "unauthenticated"


class Forbidden(CaseBridgeError, PermissionError):
    """A known client without the scope the operation needs (HTTP 403)."""

    code = "forbidden"


class ClientError(CaseBridgeError, ValueError):
    """A ``node clients`` command that cannot be done (bad id or scope, unknown or existing client)."""

    code = "malformed"


@dataclass(frozen=True)
class Client:
    client_id: str
    scopes: frozenset[str]
    token_hash: str  # hex SHA-256 of the token
    created_at: str
    revoked_at: str | None = None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_client(
    clients: Mapping[str, Client], client_id: str, scopes: Iterable[str], token: str, now: datetime
) -> dict[str, Client]:
    """``clients`` with a new one; its id must be new and its scopes known."""
    wanted = frozenset(scopes)
    if not CLIENT_ID.match(client_id):
        raise ClientError("a client id is 1-64 letters, digits, '.', '_' or '-'")
    if not wanted or not wanted <= set(SCOPES):
        raise ClientError(f"scopes must be some of {', '.join(SCOPES)}")
    if client_id in clients:
        raise ClientError(f"client {client_id} exists (revoke it, or choose another id)")
    return {**clients, client_id: Client(client_id, wanted, token_hash(token), now.isoformat())}


def revoke_client(clients: Mapping[str, Client], client_id: str, now: datetime) -> dict[str, Client]:
    current = clients.get(client_id)
    if current is None or current.revoked_at is not None:
        raise ClientError(f"no current client {client_id}")
    return {**clients, client_id: Client(**{**current.__dict__, "revoked_at": now.isoformat()})}


def authenticate(clients: Mapping[str, Client], authorization: str | None) -> Client:
    """The current client whose token the ``Authorization: Bearer`` header carries."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("an Authorization: Bearer <token> header is required")
    presented = token_hash(token.strip())
    for client in clients.values():
        if hmac.compare_digest(client.token_hash, presented) and client.revoked_at is None:
            return client
    raise Unauthenticated("the token names no current client of this node")


def authorize(client: Client, needed: frozenset[str]) -> None:
    """Pass if the client holds one of the ``needed`` scopes (an empty set needs none)."""
    if needed and not needed & client.scopes:
        raise Forbidden(f"client {client.client_id} lacks the scope {' or '.join(sorted(needed))}")


def clients_file(home: Path, participant: str) -> Path:
    return home / "nodes" / participant / "clients.json"


def decode_clients(text: str) -> dict[str, Client]:
    doc: dict[str, Any] = json.loads(text) if text.strip() else {}
    return {
        cid: Client(cid, frozenset(c["scopes"]), c["token_hash"], c["created_at"], c.get("revoked_at"))
        for cid, c in doc.get("clients", {}).items()
    }


def encode_clients(clients: Mapping[str, Client]) -> str:
    doc = {
        "clients": {
            c.client_id: {"scopes": sorted(c.scopes), "token_hash": c.token_hash,
                          "created_at": c.created_at, "revoked_at": c.revoked_at}
            for c in clients.values()
        }
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def load_clients(path: Path) -> dict[str, Client]:
    return decode_clients(path.read_text()) if path.exists() else {}


def save_clients(path: Path, clients: Mapping[str, Client]) -> None:
    """Write the clients file (0600, in a 0700 folder), replacing it whole."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(encode_clients(clients))
    os.replace(partial, path)


@dataclass
class ClientsFile:
    """The clients of a running node, read again whenever the file changes."""

    path: Path
    _stamp: tuple[int, int] | None = None
    _clients: Mapping[str, Client] | None = None

    def current(self) -> Mapping[str, Client]:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp or self._clients is None:
            self._clients, self._stamp = load_clients(self.path), stamp
        return self._clients
