"""The node's OpenAPI document (``deploy/openapi/node.yaml``) matches the routes the node serves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from casebridge.node.app import Node, http_app

# http_app keys the node by a plain string; aiohttp's advice about AppKey is not this test's subject
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "deploy" / "openapi" / "node.yaml"


def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return document


def served() -> set[tuple[str, str]]:
    """(method, path) of every route ``http_app`` registers (it only stores the node it is given)."""
    app = http_app(object())  # type: ignore[arg-type]
    return {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }


def test_document_parses_as_openapi_3() -> None:
    """The document is YAML with an OpenAPI 3 version, a title and paths."""
    document = spec()
    assert str(document["openapi"]).startswith("3.")
    assert document["info"]["title"]
    assert document["paths"]


def test_paths_equal_the_registered_routes() -> None:
    """Every documented path is served and every served path is documented."""
    assert set(spec()["paths"]) == {path for _, path in served()}


def test_methods_equal_the_registered_routes() -> None:
    """Each path documents exactly the HTTP methods the node serves for it."""
    methods = {"get", "post", "put", "patch", "delete"}
    documented = {(m, path) for path, item in spec()["paths"].items() for m in item if m in methods}
    assert documented == served()


def test_path_parameters_are_documented() -> None:
    """Each {parameter} in a path is declared as a path parameter of its operations."""
    for path, item in spec()["paths"].items():
        wanted = set(re.findall(r"{(\w+)}", path))
        for operation in (v for k, v in item.items() if k != "parameters"):
            declared = {
                p["name"]
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
                if p.get("in") == "path"
            }
            assert wanted <= declared, (path, wanted - declared)


def test_node_type_is_what_http_app_expects() -> None:
    """The stand-in above is only stored: the app keeps the node object under "node"."""
    stand_in = object()
    assert http_app(stand_in)["node"] is stand_in  # type: ignore[arg-type]
    assert Node.__dataclass_fields__.keys() >= {"world", "me", "conn"}


def test_event_types_are_the_catalogue() -> None:
    """EventIn's event_type enum is exactly the event catalogue the node accepts."""
    from casebridge.core.model import EVENT_TYPES

    enum = spec()["components"]["schemas"]["EventIn"]["properties"]["event_type"]["enum"]
    assert enum == list(EVENT_TYPES)


def test_every_operation_but_health_needs_a_client_token_with_its_scopes() -> None:
    """The bearer scheme is the default; /health opts out; each secured operation documents 401
    and 403, and is exactly an operation the node checks scopes for."""
    from casebridge.node.app import ROUTE_SCOPES

    document = spec()
    assert document["components"]["securitySchemes"]["clientToken"] == {
        **document["components"]["securitySchemes"]["clientToken"], "type": "http", "scheme": "bearer"}
    assert document["security"] == [{"clientToken": []}]
    secured = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("security") == []:
                continue
            secured.add((method.upper(), path))
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
    assert secured == set(ROUTE_SCOPES)
    assert document["paths"]["/health"]["get"]["security"] == []
