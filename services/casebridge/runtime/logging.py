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
    logging.getLogger(COORDINATOR_LOGGER).addFilter(coordinator_not_available_is_info)
    _configured = True


COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"


def coordinator_not_available_is_info(record: logging.LogRecord) -> bool:
    """aiokafka logs every retried coordinator lookup at ERROR, and a fresh group's first lookup
    always fails with GroupCoordinatorNotAvailableError while the broker creates
    ``__consumer_offsets``: a normal start-up state, logged here at INFO (aio-libs/aiokafka#44;
    docs/decisions/0003-coordinator-not-available.md). Other errors keep their level."""
    if record.levelno == logging.ERROR and "CoordinatorNotAvailable" in record.getMessage():
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)
    return True


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
