"""The monitor's HTTP face: one page (``/``) and its script, ``/api/figures`` JSON, ``/metrics``.

The page and its script ship inside the package (no CDN: deployments may be air-gapped) and a
Content-Security-Policy forbids anything but same-origin resources. Handlers read the figures
through a callable, so tests serve figures built from synthetic audit records.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from aiohttp import web

from casebridge.monitor import view
from casebridge.monitor.figures import Figures

FiguresSource = Callable[[], Figures]
SOURCE: web.AppKey[FiguresSource] = web.AppKey("figures", FiguresSource)  # type: ignore[arg-type]  # a Callable alias is a valid key type at runtime
STATIC = {"/": ("index.html", "text/html"), "/monitor.js": ("monitor.js", "text/javascript"),
          "/monitor.css": ("monitor.css", "text/css")}
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def asset(name: str) -> str:
    return (resources.files("casebridge.monitor") / "static" / name).read_text(encoding="utf-8")


def http_app(source: FiguresSource) -> web.Application:
    """The aiohttp application over a figures source."""
    api = web.Application()
    api[SOURCE] = source
    api.add_routes([web.get(path, static) for path in STATIC])
    api.add_routes([web.get("/api/figures", figures_json), web.get("/metrics", metrics),
                    web.get("/health", health)])
    return api


async def static(request: web.Request) -> web.Response:
    name, kind = STATIC[request.path]
    return web.Response(text=asset(name), content_type=kind, headers=HEADERS)


async def figures_json(request: web.Request) -> web.Response:
    return web.json_response(view.to_json(request.app[SOURCE]()), headers=HEADERS)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=view.metrics(request.app[SOURCE]()).encode(),
                        headers={"Content-Type": PROMETHEUS_TEXT})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})
