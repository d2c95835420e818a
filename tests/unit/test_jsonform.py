"""Plain JSON <-> Avro values (``casebridge.core.jsonform``), on small schemas and every payload schema."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from casebridge.core import avro
from casebridge.core.errors import SchemaInvalid
from casebridge.core.jsonform import collect_names, from_json, to_json
from casebridge.runtime.keystore import load_default_schemas
from tests.unit.envelope_factories import example_payload

SCHEMAS = load_default_schemas()
TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
DATE = {"type": "int", "logicalType": "date"}
ITEM = {"type": "record", "name": "Item", "fields": [{"name": "label", "type": "string"}]}
RECORD: dict[str, Any] = {
    "type": "record",
    "name": "Sample",
    "namespace": "test.jsonform",
    "fields": [
        {"name": "blob", "type": "bytes"},
        {"name": "born", "type": DATE},
        {"name": "at", "type": TIMESTAMP},
        {"name": "count", "type": "int"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "when", "type": ["null", TIMESTAMP], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "items", "type": {"type": "array", "items": ITEM}},
        {"name": "first", "type": ["null", "Item"], "default": None},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "choice", "type": ["null", "long", "string"], "default": None},
    ],
}
NAMES = collect_names(RECORD, {})
MINIMAL = {"blob": "AQI=", "born": "2010-05-17", "at": "2026-11-28T12:00:00+07:00", "count": 3, "kind": "A"}


def convert(**changes: Any) -> dict[str, Any]:
    """The Avro value of MINIMAL with ``changes`` (a value of ``...`` removes the field)."""
    doc = {k: v for k, v in {**MINIMAL, **changes}.items() if v is not ...}
    result: dict[str, Any] = from_json(RECORD, doc, NAMES)
    return result


def test_minimal_document_converts() -> None:
    """Base64 becomes bytes, dates and offset timestamps become date and UTC datetime values."""
    value = convert()
    assert value["blob"] == b"\x01\x02"
    assert value["born"] == date(2010, 5, 17)
    assert value["at"] == datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
    assert value["at"].tzinfo == UTC
    assert (value["count"], value["kind"]) == (3, "A")


def test_optional_fields_and_lists_may_be_left_out() -> None:
    """A nullable field left out is null and a list left out is empty."""
    value = convert()
    assert value["note"] is None and value["when"] is None and value["first"] is None
    assert value["tags"] == [] and value["items"] == [] and value["choice"] is None


def test_named_types_are_resolved_by_short_name() -> None:
    """A field typed by a name declared earlier in the schema converts as that record."""
    value = convert(first={"label": "x"}, items=[{"label": "y"}])
    assert value["first"] == {"label": "x"}
    assert value["items"] == [{"label": "y"}]
    assert {"Item", "test.jsonform.Item", "Kind", "test.jsonform.Sample"} <= NAMES.keys()


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, None), (5, 5), ("five", "five")],
)
def test_union_takes_the_first_branch_that_fits(given: Any, expected: Any) -> None:
    """A union value is the plain value of the first branch that accepts it."""
    assert convert(choice=given)["choice"] == expected


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"extra": 1}, "$: unknown field(s) extra"),
        ({"items": [{"label": "y", "colour": "red"}]}, "$.items[0]: unknown field(s) colour"),
        ({"first": {"label": "x", "z": 0}}, "$.first: unknown field(s) z"),
        ({"blob": "not base64!"}, "$.blob"),
        ({"blob": 12}, "$.blob"),
        ({"born": "17/05/2010"}, "$.born"),
        ({"at": "2026-11-28T12:00:00"}, "$.at"),
        ({"at": "yesterday"}, "$.at"),
        ({"when": "2026-11-28T12:00:00"}, "$.when"),
        ({"count": "3"}, "$.count: expected int"),
        ({"count": True}, "$.count: expected int"),
        ({"kind": "C"}, "$.kind"),
        ({"tags": "a,b"}, "$.tags: expected a list"),
        ({"tags": ["a", 2]}, "$.tags[1]: expected string"),
        ({"choice": True}, "$.choice: bool fits none"),
        ({"choice": 1.5}, "$.choice: float fits none"),
        ({"count": ...}, "$.count: required"),
        ({"blob": ...}, "$.blob: required"),
    ],
)
def test_what_does_not_fit_is_rejected_with_its_path(changes: dict[str, Any], path: str) -> None:
    """Unknown fields, wrong kinds, naive timestamps and missing required fields name their path."""
    with pytest.raises(SchemaInvalid) as caught:
        convert(**changes)
    assert path in caught.value.why
    assert caught.value.code == "schema_invalid"


def test_naive_timestamp_is_rejected() -> None:
    """A timestamp without a UTC offset is refused rather than guessed."""
    with pytest.raises(SchemaInvalid, match="UTC offset"):
        convert(at="2026-11-28T12:00:00")


def test_record_must_be_an_object() -> None:
    """A JSON value that is not an object for a record is rejected at the root path."""
    with pytest.raises(SchemaInvalid, match=r"\$: expected an object"):
        from_json(RECORD, ["not", "an", "object"], NAMES)


def test_to_json_is_the_reverse() -> None:
    """to_json writes bytes as base64 and dates and times as ISO 8601, and converts back unchanged."""
    value = convert(
        first={"label": "x"}, tags=["a"], note="n", when="2026-01-02T03:04:05.123000+00:00", choice=7
    )
    doc = to_json(value)
    assert doc["blob"] == "AQI="
    assert doc["born"] == "2010-05-17"
    assert doc["at"] == "2026-11-28T05:00:00+00:00"
    assert json.loads(json.dumps(doc)) == doc
    assert from_json(RECORD, doc, NAMES) == value


def test_to_json_of_plain_values() -> None:
    """Tuples become lists, nested mappings are walked, other values pass through."""
    moment = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=7)))
    assert to_json({"a": (b"\xff", moment, None, 1.5)}) == {
        "a": [base64.b64encode(b"\xff").decode(), "2026-01-01T00:00:00+07:00", None, 1.5]
    }


@pytest.mark.parametrize("event_type", sorted(SCHEMAS.event_schemas))
def test_every_payload_schema_round_trips(event_type: str) -> None:
    """A full example payload of each event type goes to JSON text and back to the same Avro values."""
    document = SCHEMAS.documents[SCHEMAS.event_schemas[event_type]]
    value = example_payload(event_type)
    text = json.dumps(to_json(value))
    back = from_json(document, json.loads(text), collect_names(document, {}))
    assert back == value
    name = SCHEMAS.event_schemas[event_type]
    assert avro.decode(SCHEMAS, avro.encode(SCHEMAS, name, back), name) == value


@pytest.mark.parametrize("event_type", sorted(SCHEMAS.event_schemas))
def test_every_payload_schema_accepts_an_empty_object(event_type: str) -> None:
    """Every data category is optional: an empty JSON payload is every category null."""
    document = SCHEMAS.documents[SCHEMAS.event_schemas[event_type]]
    value = from_json(document, {}, collect_names(document, {}))
    assert value == {f["name"]: None for f in document["fields"]}


@pytest.mark.parametrize("count", [2**31, -(2**31) - 1])
def test_int_out_of_range_is_rejected_with_its_path(count: int) -> None:
    """An integer outside Avro's 32-bit int range does not fit an int field and names its path."""
    with pytest.raises(SchemaInvalid, match=r"\$\.count"):
        convert(count=count)
