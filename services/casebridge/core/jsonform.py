"""Plain JSON <-> Avro values, guided by a schema document, for the hub's HTTP API.

JSON has no bytes, dates or timestamps: on the way in, ``bytes``/``fixed`` are base64 text,
``date`` is ``YYYY-MM-DD`` and ``timestamp-millis`` an ISO 8601 time with offset; unions take the
plain value (the first branch that fits); an optional (nullable) field or a list may be left out
(null, empty). Anything that does not fit raises ``SchemaInvalid`` with the field's path.
``to_json`` is the reverse, for ``GET /inbox``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from casebridge.core.errors import SchemaInvalid

PRIMITIVES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
}


def collect_names(schema: Any, names: dict[str, Any], namespace: str = "") -> dict[str, Any]:
    """Every named type of ``schema`` by full and short name."""
    if isinstance(schema, list):
        for branch in schema:
            collect_names(branch, names, namespace)
    elif isinstance(schema, dict):
        kind, ns = schema.get("type"), schema.get("namespace", namespace)
        if kind in ("record", "enum", "fixed"):
            full = schema["name"] if "." in schema["name"] else f"{ns}.{schema['name']}".lstrip(".")
            names[full] = names[schema["name"].rsplit(".", 1)[-1]] = schema
        for field in schema.get("fields", []):
            collect_names(field["type"], names, ns)
        for key in ("items", "values"):
            if key in schema:
                collect_names(schema[key], names, ns)
    return names


def from_json(schema: Any, value: Any, names: Mapping[str, Any], path: str = "$") -> Any:
    """The Avro value of a JSON ``value`` for ``schema``, or ``SchemaInvalid`` naming the path."""
    if isinstance(schema, str) and schema in names:
        return from_json(names[schema], value, names, path)
    if isinstance(schema, list):
        return _union(schema, value, names, path)
    kind = schema if isinstance(schema, str) else schema.get("type")
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if logical or kind in ("bytes", "fixed", "null"):
        return _special(kind, logical, value, path)
    if kind in PRIMITIVES:
        return _primitive(kind, value, path)
    if kind == "record":
        return _record(schema, value, names, path)
    if kind == "array":
        if not isinstance(value, list):
            raise SchemaInvalid(f"{path}: expected a list")
        return [from_json(schema["items"], v, names, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "enum" and value in schema["symbols"]:
        return value
    if isinstance(kind, dict | list):
        return from_json(kind, value, names, path)
    raise SchemaInvalid(f"{path}: {value!r} does not fit {kind}")


INT_RANGES = {"int": 1 << 31, "long": 1 << 63}


def _primitive(kind: str, value: Any, path: str) -> Any:
    if not isinstance(value, PRIMITIVES[kind]) or (kind != "boolean" and isinstance(value, bool)):
        raise SchemaInvalid(f"{path}: expected {kind}")
    bound = INT_RANGES.get(kind)
    if bound is not None and isinstance(value, int) and not -bound <= value < bound:
        raise SchemaInvalid(f"{path}: {value} is out of range for {kind}")
    return value


def _record(schema: Mapping[str, Any], value: Any, names: Mapping[str, Any], path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SchemaInvalid(f"{path}: expected an object")
    known = {f["name"] for f in schema["fields"]}
    unknown = sorted(set(value) - known)
    if unknown:
        raise SchemaInvalid(f"{path}: unknown field(s) {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for field in schema["fields"]:
        name = field["name"]
        if name in value:
            out[name] = from_json(field["type"], value[name], names, f"{path}.{name}")
        elif "default" in field:
            out[name] = field["default"]
        elif isinstance(field["type"], list) and "null" in field["type"]:
            out[name] = None  # an optional value left out of the JSON
        elif isinstance(field["type"], dict) and field["type"].get("type") == "array":
            out[name] = []  # a list left out of the JSON is an empty list
        else:
            raise SchemaInvalid(f"{path}.{name}: required")
    return out


def _union(branches: list[Any], value: Any, names: Mapping[str, Any], path: str) -> Any:
    if value is None and "null" in branches:
        return None
    candidates = [b for b in branches if b != "null"]
    if len(candidates) == 1:  # an optional value: its own error is the useful one
        return from_json(candidates[0], value, names, path)
    for branch in candidates:
        try:
            return from_json(branch, value, names, path)
        except SchemaInvalid:
            continue
    raise SchemaInvalid(f"{path}: {type(value).__name__} fits none of the union's types")


def _special(kind: Any, logical: str | None, value: Any, path: str) -> Any:
    try:
        if logical == "timestamp-millis":
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
            if moment.tzinfo is not None:
                return moment.astimezone(UTC)
        if logical == "date":
            return value if isinstance(value, date) else date.fromisoformat(value)
        if kind in ("bytes", "fixed"):
            return value if isinstance(value, bytes) else base64.b64decode(value, validate=True)
        if kind == "null" and value is None:
            return None
    except (TypeError, ValueError, binascii.Error) as exc:
        raise SchemaInvalid(f"{path}: {exc}") from exc
    if logical == "timestamp-millis":
        raise SchemaInvalid(f"{path}: a timestamp needs its UTC offset")
    if logical is not None:
        return from_json(kind, value, {}, path)
    raise SchemaInvalid(f"{path}: does not fit {kind}")


def to_json(value: Any) -> Any:
    """Avro values as plain JSON: bytes as base64, dates and times as ISO 8601."""
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
