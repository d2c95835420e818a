"""Avro single-object encoding and the fingerprint -> schema table.

Wire form of every CaseBridge record: ``C3 01``, the 8-byte CRC-64-AVRO fingerprint of the writer
schema (little-endian, as fastavro's hex digest reads), then the Avro binary body. Schemas are the
``*.avsc`` files of one folder that the caller names (``schemas/avro/`` at the repository root),
plus the released schemas of a lock file, so data written with an older released schema stays
readable. Loading is the only file IO here and it reads only the paths it is given.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.utils import generate_many

from casebridge.core.errors import Malformed, SchemaInvalid, UnknownSchema
from casebridge.core.model import DATA_CATEGORIES, EVENT_TYPES

MAGIC = b"\xc3\x01"
PREFIX_LEN = 10
EVENT_NAMESPACE = "casebridge.events"
EVENT_TYPE_ATTR = "casebridge.event_type"

Schema = Any  # a fastavro parsed schema (fastavro ships no types)


@dataclass(frozen=True)
class SchemaSet:
    """Every known schema: current ones by name, current and released ones by fingerprint."""

    by_name: Mapping[str, Schema]
    by_fingerprint: Mapping[bytes, Schema]
    names: Mapping[bytes, str]  # fingerprint -> full name (current and released)
    fingerprints: Mapping[str, bytes]  # full name -> current fingerprint
    event_schemas: Mapping[str, str]  # event type -> full name of its payload schema
    sections: Mapping[bytes, Mapping[str, Schema]]  # payload fingerprint -> category -> schema
    documents: Mapping[str, Mapping[str, Any]]  # full name -> current schema document (JSON)


@dataclass(frozen=True)
class Released:
    """One entry of the lock file: a schema as it was released."""

    name: str
    fingerprint: bytes
    schema: Mapping[str, Any]  # the full schema document (logical types and defaults kept)


def fingerprint_of(parsed: Schema) -> bytes:
    """The 8 wire bytes of the CRC-64-AVRO fingerprint of a parsed schema."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def full_name(raw: Mapping[str, Any]) -> str:
    name = str(raw["name"])
    return name if "." in name or "namespace" not in raw else f"{raw['namespace']}.{name}"


def parse(raw: Any) -> Schema:
    """Parse one schema document, mapping every failure to ``SchemaInvalid``."""
    try:
        return parse_schema(raw)
    except Exception as exc:
        raise SchemaInvalid(f"schema does not parse: {exc}") from exc


def read_schema_file(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaInvalid(f"{path.name}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise SchemaInvalid(f"{path.name}: top level must be a named record")
    if f"{full_name(raw)}.avsc" != path.name:
        raise SchemaInvalid(f"{path.name}: file must be named <namespace>.<Name>.avsc")
    return raw


def section_schemas(raw: Mapping[str, Any]) -> dict[str, Schema]:
    """Category -> self-contained sub-schema of a payload schema's top-level fields."""
    result: dict[str, Schema] = {}
    namespace = full_name(raw).rpartition(".")[0]
    for fld in raw["fields"]:
        kind = fld["type"]
        if fld["name"] not in DATA_CATEGORIES or not isinstance(kind, list) or kind[0] != "null":
            raise SchemaInvalid(f"{raw['name']}.{fld['name']}: not an optional data category")
        if len(kind) != 2 or not isinstance(kind[1], dict) or kind[1].get("type") != "record":
            raise SchemaInvalid(f"{raw['name']}.{fld['name']}: must be [null, record]")
        result[fld["name"]] = parse({"namespace": namespace, **kind[1]})
    return result


def read_lock(lock: Path) -> tuple[Released, ...]:
    """The released schemas of a lock file (JSON: {"released": [{name, fingerprint, schema}]})."""
    try:
        entries = json.loads(lock.read_text(encoding="utf-8"))["released"]
        return tuple(
            Released(e["name"], bytes.fromhex(e["fingerprint"]), e["schema"]) for e in entries
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SchemaInvalid(f"{lock.name}: {exc}") from exc


def write_lock(lock: Path, entries: tuple[Released, ...]) -> None:
    """Write a lock file (used by ``casebridge schemas release``)."""
    doc = {"released": [
        {"name": e.name, "fingerprint": e.fingerprint.hex(), "schema": e.schema}
        for e in sorted(entries, key=lambda e: (e.name, e.fingerprint))
    ]}
    lock.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def load_schemas(folder: Path, lock: Path | None = None) -> SchemaSet:
    """Parse every ``*.avsc`` in ``folder`` (and the released schemas of ``lock``) once."""
    raws = {full_name(raw): raw for raw in map(read_schema_file, sorted(folder.glob("*.avsc")))}
    current = {name: parse(raw) for name, raw in raws.items()}
    events = {str(r[EVENT_TYPE_ATTR]): name for name, r in raws.items() if EVENT_TYPE_ATTR in r}
    missing = set(EVENT_TYPES) - set(events)
    if missing:
        raise SchemaInvalid(f"no payload schema for {sorted(missing)}")
    table: dict[bytes, tuple[str, Mapping[str, Any]]] = {
        fingerprint_of(current[name]): (name, raw) for name, raw in raws.items()
    }
    for entry in read_lock(lock) if lock is not None else ():
        table.setdefault(entry.fingerprint, (entry.name, entry.schema))
    payloads = set(events.values())
    return SchemaSet(
        by_name=current,
        by_fingerprint={fp: parse(raw) for fp, (_, raw) in table.items()},
        names={fp: name for fp, (name, _) in table.items()},
        fingerprints={name: fingerprint_of(parsed) for name, parsed in current.items()},
        event_schemas=events,
        sections={fp: section_schemas(raw) for fp, (n, raw) in table.items() if n in payloads},
        documents=raws,
    )


def encode_body(schema: Schema, record: Any) -> bytes:
    """Avro binary body, written strictly: unknown or missing fields are ``SchemaInvalid``."""
    out = io.BytesIO()
    try:
        schemaless_writer(out, schema, record, strict=True)
    except Exception as exc:
        raise SchemaInvalid(f"record does not match {schema.get('name', schema)}: {exc}") from exc
    return out.getvalue()


def decode_body(schema: Schema, body: bytes) -> Any:
    """Read one Avro body that must be consumed exactly; any failure is ``Malformed``."""
    stream = io.BytesIO(body)
    try:
        record = schemaless_reader(stream, schema, None)
    except Exception as exc:
        raise Malformed(f"undecodable {schema.get('name', 'record')}: {exc!r}") from exc
    if stream.tell() != len(body):
        raise Malformed(f"{len(body) - stream.tell()} trailing bytes after the record")
    return record


def encode(schemas: SchemaSet, name: str, record: Any) -> bytes:
    """Single-object encoding of ``record`` with the current schema ``name``."""
    return MAGIC + schemas.fingerprints[name] + encode_body(schemas.by_name[name], record)


def split(schemas: SchemaSet, data: bytes) -> tuple[str, Schema, bytes]:
    """(schema name, writer schema, body) of a single-object encoded value."""
    if len(data) < PREFIX_LEN or data[:2] != MAGIC:
        raise Malformed("not Avro single-object encoding (bad marker or too short)")
    fp = data[2:PREFIX_LEN]
    if fp not in schemas.by_fingerprint:
        raise UnknownSchema(f"unknown schema fingerprint {fp.hex()}")
    return schemas.names[fp], schemas.by_fingerprint[fp], data[PREFIX_LEN:]


def decode(schemas: SchemaSet, data: bytes, name: str) -> Any:
    """Decode a single-object encoded value that must have been written with schema ``name``."""
    found, writer, body = split(schemas, data)
    if found != name:
        raise SchemaInvalid(f"expected {name}, got {found}")
    return decode_body(writer, body)


def check_schemas(folder: Path, lock: Path, samples: int = 40) -> list[str]:
    """Problems found: unparsable schemas, or released schemas whose data no longer reads."""
    try:
        schemas = load_schemas(folder)
        released = read_lock(lock)
    except SchemaInvalid as exc:
        return [exc.why]
    return [problem for entry in released for problem in check_released(schemas, entry, samples)]


def check_released(schemas: SchemaSet, entry: Released, samples: int) -> list[str]:
    """Data written with the released schema must be readable by the current one."""
    old = parse(entry.schema)
    if fingerprint_of(old) != entry.fingerprint:
        return [f"{entry.name}: lock fingerprint does not match its canonical form"]
    if entry.name not in schemas.by_name:
        return [f"{entry.name}: released schema was removed"]
    state = random.getstate()
    random.seed(int.from_bytes(entry.fingerprint, "little"))
    new = schemas.by_name[entry.name]
    try:
        for record in generate_many(old, samples):
            schemaless_reader(io.BytesIO(encode_body(old, record)), old, new)
    except Exception as exc:
        return [f"{entry.name} {entry.fingerprint.hex()}: old data unreadable: {exc}"]
    finally:
        random.setstate(state)
    return []


def released_now(schemas: SchemaSet) -> tuple[Released, ...]:
    """Lock entries for the current schemas (to append to the lock when releasing)."""
    return tuple(
        Released(name, schemas.fingerprints[name], raw) for name, raw in schemas.documents.items()
    )
