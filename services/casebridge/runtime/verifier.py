"""Ed25519 checks in a child process, so that the router's loop does not wait for them.

The loop spends most of an envelope in Python, and CPython runs one thread of Python at a time:
checks on a thread of the loop's own process wait for the GIL between the loop's steps (two
verifier threads measured slower than none, router/loop.py). A child process has a GIL of its
own, so it checks the next envelopes of a batch on the other core while the loop steps the ones
before them.

The loop sends (public key, signature, message) triples in numbered requests over a pipe and
reads back one verdict byte each, in order. The child answers only whether a signature verifies
(``keys.signature_valid``, libsodium); the loop makes every other check itself and compares the
triple with what it decoded (``sealing.verify``'s ``checked``). When the child is gone, late or
answers out of turn, the loop checks the signature itself: no signature is ever taken as valid
without a check, and the child is started again on a later batch.

Run as ``python -m casebridge.runtime.verifier`` (the loop does): it reads requests on stdin,
answers on stdout, and ends when stdin closes (its parent ended, even by SIGKILL).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import IO, BinaryIO

from casebridge.runtime.logging import get_logger

log = get_logger("casebridge.verifier")

HEAD = struct.Struct(">QI")  # a request's or an answer's ticket and item count
LENGTH = struct.Struct(">I")  # an item's message length, after its 32-byte key and 64-byte signature
KEY_LEN, SIG_LEN = 32, 64
PIPE_BYTES = 1 << 20  # both pipes: a batch's requests in flight fit without blocking the loop
ANSWER_TIMEOUT = 10.0  # seconds without an answer before the child is given up
RESTART_AFTER = 5.0  # seconds before a failed child is started again
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

Triple = tuple[bytes, bytes, bytes]  # public key, signature, message


class Verifier:
    """The loop's side: a child (started by ``running``: with the worker, and again after a
    failure), requests in flight, answers in order."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.ticket = 0  # the last one issued; never reused, also across children
        self.first = 1  # the current child's first ticket: an earlier one was a former child's
        self.failed_at: float | None = None

    def submit(self, triples: Sequence[Triple]) -> int | None:
        """Send ``triples`` (32-byte keys, 64-byte signatures: anything else is ``ValueError``) to be
        checked; the request's ticket, None when there is no child (the caller checks them itself)."""
        if any(len(key) != KEY_LEN or len(sig) != SIG_LEN for key, sig, _ in triples):
            raise ValueError("only 32-byte keys and 64-byte signatures are sent to the child")
        child = self.running()
        if child is None or child.stdin is None:
            return None
        self.ticket += 1
        frame = b"".join([HEAD.pack(self.ticket, len(triples)),
                          *(b"".join((key, sig, LENGTH.pack(len(msg)), msg)) for key, sig, msg in triples)])
        try:
            write_all(child.stdin, frame)
        except OSError as exc:
            self.fail(f"request not sent: {exc!r}")
            return None
        return self.ticket

    def result(self, ticket: int | None, count: int) -> bytes | None:
        """The ``count`` verdicts (1: verifies) of request ``ticket``; None when they cannot be had."""
        child = self.child
        if ticket is None or ticket < self.first or child is None or child.stdout is None:
            return None  # no child, or a former one (its answers went with it)
        try:
            while True:
                head = read_exactly(child.stdout, HEAD.size, ANSWER_TIMEOUT)
                answered, n = HEAD.unpack(head)
                verdicts = read_exactly(child.stdout, n, ANSWER_TIMEOUT)
                if answered == ticket and n == count:
                    return verdicts
                if answered >= ticket:  # out of turn: the pipe is out of step
                    raise OSError(f"answer {answered} ({n} items) where {ticket} ({count}) was due")
                # an earlier request whose batch was dropped (aborted): its answer is not needed
        except OSError as exc:
            self.fail(f"no answer: {exc!r}")
            return None

    def running(self) -> subprocess.Popen[bytes] | None:
        if self.child is not None and self.child.poll() is None:
            return self.child
        if self.child is not None:
            self.fail(f"the child exited with {self.child.returncode}")
        if self.failed_at is not None and time.monotonic() - self.failed_at < RESTART_AFTER:
            return None
        try:
            child = subprocess.Popen([sys.executable, "-m", "casebridge.runtime.verifier"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            self.failed_at = time.monotonic()
            log.warning("verifier_not_started", error=repr(exc), action="signatures checked in the loop")
            return None
        for pipe in (child.stdin, child.stdout):
            with contextlib.suppress(OSError):  # a smaller pipe only makes the loop wait sometimes
                fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[union-attr]
        self.child, self.first, self.failed_at = child, self.ticket + 1, None
        log.info("verifier_started", pid=child.pid)
        return child

    def fail(self, why: str) -> None:
        """Give the child up (it is killed); checks go back to the loop until it is started again."""
        log.warning("verifier_failed", why=why, action="signatures checked in the loop; restarted later")
        self.close()
        self.failed_at = time.monotonic()

    def close(self) -> None:
        child, self.child = self.child, None
        if child is None:
            return
        with contextlib.suppress(OSError):
            if child.stdin is not None:
                child.stdin.close()
        with contextlib.suppress(OSError):
            child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(2)
        with contextlib.suppress(OSError):
            if child.stdout is not None:
                child.stdout.close()


def write_all(pipe: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = pipe.write(view)
        if written is None:
            raise OSError("the pipe would block")
        view = view[written:]


def read_exactly(pipe: IO[bytes], n: int, timeout: float) -> bytes:
    parts: list[bytes] = []
    left = n
    deadline = time.monotonic() + timeout
    while left:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([pipe], [], [], wait)[0]:
            raise OSError(f"no answer within {timeout} s")
        chunk = os.read(pipe.fileno(), left)
        if not chunk:
            raise OSError("the child closed its output")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def serve(source: BinaryIO, sink: BinaryIO) -> int:
    """The child: answer each request on ``source`` with its verdicts on ``sink``, until EOF."""
    from casebridge.core.errors import Malformed
    from casebridge.core.keys import signature_valid

    while True:
        head = source.read(HEAD.size)
        if len(head) < HEAD.size:
            return 0
        ticket, count = HEAD.unpack(head)
        verdicts = bytearray(count)
        for i in range(count):
            fixed = source.read(KEY_LEN + SIG_LEN + LENGTH.size)
            (length,) = LENGTH.unpack(fixed[KEY_LEN + SIG_LEN:])
            message = source.read(length)
            if len(fixed) < KEY_LEN + SIG_LEN + LENGTH.size or len(message) < length:
                return 1  # cut off: the parent is gone
            try:
                verdicts[i] = signature_valid(fixed[:KEY_LEN], fixed[KEY_LEN:KEY_LEN + SIG_LEN], message)
            except Malformed:
                verdicts[i] = 0
        sink.write(HEAD.pack(ticket, count) + bytes(verdicts))
        sink.flush()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the parent's to handle
    sink = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the answers
    return serve(sys.stdin.buffer, sink)


if __name__ == "__main__":
    sys.exit(main())
