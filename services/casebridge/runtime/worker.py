"""Running a faust worker that stops within a few seconds of SIGTERM or SIGINT, whatever the broker.

faust stops its consumer thread with a timeout of its own, and with the broker gone it waits for
every child service in turn (the monitor took over 15 s). The worker here begins faust's orderly
stop on the signal and, should that not finish in ``stop_within`` seconds, ends the process with
128 + the signal's number. That is safe for the services run this way: the monitor rebuilds its
state from ``cb.audit``, and a node's outbox and inbox are SQLite transactions (synchronous=FULL),
so what was not acknowledged is sent again and stored once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import faust

from casebridge.runtime.logging import get_logger

log = get_logger("casebridge.worker")
STOP_WITHIN = 4.0  # seconds from SIGTERM to exit: under the 5 s a supervisor is promised


def force_exit(signum: int) -> None:
    log.warning("stop_forced", signal=signal.Signals(signum).name, after_s=STOP_WITHIN)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(128 + signum)


def arm(signum: int, seconds: float) -> threading.Timer:
    """A daemon timer that ends the process ``seconds`` from now unless it has exited by then."""
    timer = threading.Timer(seconds, force_exit, (signum,))
    timer.daemon = True
    timer.start()
    return timer


class PromptWorker(faust.Worker):
    """A faust worker whose stop on SIGTERM / SIGINT is bounded by ``stop_within`` seconds."""

    stop_within: float = STOP_WITHIN

    def _on_sigterm(self) -> None:
        arm(signal.SIGTERM, self.stop_within)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        arm(signal.SIGINT, self.stop_within)
        super()._on_sigint()
