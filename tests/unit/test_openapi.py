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
