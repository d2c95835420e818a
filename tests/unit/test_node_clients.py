"""``casebridge node clients add|list|revoke`` and the token rules of ``casebridge.node.auth``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from casebridge.cli import main
from casebridge.node import auth

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_a_token_authenticates_its_client_only_while_current() -> None:
    """A client's token names it; after revocation the same token names no one."""
    token = auth.new_token()
    clients = auth.add_client({}, "hub", ["submit"], token, NOW)
    assert auth.authenticate(clients, f"Bearer {token}").client_id == "hub"
    with pytest.raises(auth.Unauthenticated):
        auth.authenticate(auth.revoke_client(clients, "hub", NOW), f"Bearer {token}")


@pytest.mark.parametrize(("client_id", "scopes"), [("hub", ["admin"]), ("hub", []), ("bad id!", ["read"])])
def test_unknown_scopes_and_bad_ids_are_refused(client_id: str, scopes: list[str]) -> None:
    """Scopes are some of submit, read, process; ids are short and plain."""
    with pytest.raises(auth.ClientError):
        auth.add_client({}, client_id, scopes, auth.new_token(), NOW)


def test_a_client_id_is_added_once() -> None:
    """Adding an id that exists is refused (revoke it or choose another)."""
    clients = auth.add_client({}, "hub", ["read"], auth.new_token(), NOW)
    with pytest.raises(auth.ClientError):
        auth.add_client(clients, "hub", ["read"], auth.new_token(), NOW)


def test_authorize_needs_one_of_the_scopes() -> None:
    """A client passes with any one of the needed scopes and is Forbidden without."""
    client = auth.add_client({}, "tool", ["read"], auth.new_token(), NOW)["tool"]
    auth.authorize(client, frozenset({"submit", "read"}))
    with pytest.raises(auth.Forbidden):
        auth.authorize(client, frozenset({"process"}))


def test_cli_adds_lists_and_revokes_a_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's commands: add prints the token once, list shows scopes, revoke ends it."""
    monkeypatch.setenv("CASEBRIDGE_HOME", str(tmp_path))
    assert main(["node", "clients", "add", "--as", "TH.MSDHS", "hub", "--scopes", "submit,read"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith(auth.TOKEN_PREFIX)
    assert main(["node", "clients", "list", "--as", "TH.MSDHS"]) == 0
    listed = capsys.readouterr().out
    assert "hub\tread,submit" in listed and "current" in listed and token not in listed
    assert main(["node", "clients", "revoke", "--as", "TH.MSDHS", "hub"]) == 0
    clients = auth.load_clients(auth.clients_file(tmp_path, "TH.MSDHS"))
    with pytest.raises(auth.Unauthenticated):
        auth.authenticate(clients, f"Bearer {token}")


def test_cli_revoking_an_unknown_client_is_one_line_with_a_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """revoke of a client that does not exist exits 2 with a coded line, no traceback."""
    monkeypatch.setenv("CASEBRIDGE_HOME", str(tmp_path))
    assert main(["node", "clients", "revoke", "--as", "TH.MSDHS", "nobody"]) == 2
    assert "error [malformed]: no current client nobody" in capsys.readouterr().err
