"""structlog, configured once per process: console renderer on a TTY, JSON lines otherwise.

Log lines carry ids and codes (event id, case ref, sender, outcome, reject code), never personal
data and never a traceback on the wire.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_configured = False


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger; later calls are no-ops."""
    global _configured
    if _configured:
        return
    stream = stream or sys.stderr
    renderer = _renderer(fmt, stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_level(level)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(_level(level), logging.WARNING), stream=stream)
    _configured = True


def _level(name: str) -> int:
    value = logging.getLevelName(name.upper())
    return value if isinstance(value, int) else logging.INFO


def _renderer(fmt: str, stream: TextIO) -> Any:
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    if console:
        return structlog.dev.ConsoleRenderer()
    return structlog.processors.JSONRenderer(sort_keys=True)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
