"""``casebridge schemas check``: every schema parses and released data still reads."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from casebridge.cli import envelope
from casebridge.core import avro
from tests.unit.envelope_factories import SCHEMA_DIR

HANDOVER = "casebridge.events.HandoverScheduled.avsc"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="casebridge")
    envelope.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "avro"
    shutil.copytree(SCHEMA_DIR, target, ignore=shutil.ignore_patterns("*.md"))
    return target


def edit(path: Path, change: object) -> None:
    doc = json.loads(path.read_text())
    change(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc))


def test_repository_schemas_pass_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    """The committed schemas parse and read every released version (the README command)."""
    assert run("schemas", "check", "--dir", str(SCHEMA_DIR)) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_adding_an_optional_field_is_compatible(tmp_path: Path) -> None:
    """A new optional category field with a default keeps old data readable."""
    folder = copy_schemas(tmp_path)
    edit(folder / HANDOVER, lambda d: d["fields"].append(
        {"name": "legal", "type": ["null", {"type": "record", "name": "HandoverScheduledLegal",
                                            "fields": []}], "default": None}))
    assert run("schemas", "check", "--dir", str(folder)) == 0


def test_required_field_without_default_breaks_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new required field makes released data unreadable: check fails and names the schema."""
    folder = copy_schemas(tmp_path)
    edit(folder / "casebridge.envelope.Sealed.avsc",
         lambda d: d["fields"].append({"name": "added", "type": "string"}))
    assert run("schemas", "check", "--dir", str(folder)) == 1
    assert "casebridge.envelope.Sealed" in capsys.readouterr().out


def test_unparsable_schema_breaks_the_check(tmp_path: Path) -> None:
    """A schema that does not parse fails the check."""
    folder = copy_schemas(tmp_path)
    (folder / HANDOVER).write_text('{"type": "record", "name": "HandoverScheduled"')
    assert run("schemas", "check", "--dir", str(folder)) == 1


def test_release_adds_new_fingerprints_to_the_lock(tmp_path: Path) -> None:
    """schemas release appends the changed schema's fingerprint, keeping the old ones."""
    folder = copy_schemas(tmp_path)
    before = json.loads((folder / "released.lock").read_text())["released"]
    edit(folder / HANDOVER, lambda d: d["fields"][0]["type"][1]["fields"].append(
        {"name": "extra", "type": ["null", "string"], "default": None}))
    assert run("schemas", "release", "--dir", str(folder)) == 0
    after = json.loads((folder / "released.lock").read_text())["released"]
    new = avro.load_schemas(folder).fingerprints["casebridge.events.HandoverScheduled"]
    assert all(entry in after for entry in before)
    assert new.hex() in {e["fingerprint"] for e in after}
    assert run("schemas", "check", "--dir", str(folder)) == 0
