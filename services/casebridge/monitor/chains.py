"""Hash-chain verification per (sender, partition) over decoded ``cb.audit`` records (pure).

Every sender writes to its own ``cb.out.<sender>`` topic, each case to the partition its case
reference hashes to, and keeps one chain per partition: within partition p, sequence ``n`` sits
after ``n - 1`` and carries ``prev_hash`` = the envelope hash of ``n - 1`` (empty for ``n = 1``).
Each audit record names the source position (topic, partition, offset) of the envelope it decided
on; the checker groups links by (sender, source partition), orders each chain by offset and
reports, with the sender, the partition and the position:

- ``gap``: a sequence number below the highest one never appears;
- ``fork``: two different envelope hashes claim one sequence number;
- ``reorder``: a sequence number lower than one already seen at an earlier source offset;
- ``broken_link``: ``prev_hash`` is not the envelope hash of the previous sequence number;
- ``out_of_order``: within one audit partition (or file) the source offsets of one chain go
  backwards, i.e. the audit log itself was rearranged.

Chain members are delivered, forwarded and quarantined records of the topic's owner with a
sequence >= 1: a quarantined record consumed its sender's sequence number, but the router recorded
no envelope hash for it, so the link after it cannot be checked (it is not reported). In a
federation the origin router writes ``forwarded`` when it puts an envelope on a corridor
``cb.xb.<from>.<to>``: a link of the sender's chain (at its outbox position), not a delivery; the
same envelope's ``delivered`` record for local recipients is the same link. The destination
router's records of that envelope name the corridor topic as their source: they are not links
(the chain is the origin's outbox, which the origin's audit covers). Replays (``replay``)
are re-sent old links already refused; deadline alerts and router receipts are not chained
(sequence 0). An exact duplicate (same position and hash: the router's at-least-once redelivery)
is harmless and ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from casebridge.core import topics

Record = Mapping[str, Any]
ChainKey = tuple[str, int]  # (sender, partition of cb.out.<sender>)
CHAINED_OUTCOMES = frozenset({"delivered", "forwarded", "quarantined"})
SEVERITY = ("fork", "broken_link", "reorder", "out_of_order", "gap")


@dataclass(frozen=True)
class Link:
    """One envelope of a sender's chain as the audit log saw it."""

    sender: str
    sequence: int
    prev_hash: bytes | None
    envelope_hash: bytes | None  # None when the router quarantined it (no hash recorded)
    topic: str
    partition: int
    offset: int

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"

    @property
    def chain(self) -> ChainKey:
        return self.sender, self.partition


@dataclass(frozen=True)
class Finding:
    """One problem in one chain, where it was seen."""

    sender: str
    partition: int  # of cb.out.<sender>: whose chain
    kind: str  # gap, fork, reorder, broken_link, out_of_order
    sequence: int
    position: str  # source position "cb.out.<sender>/<partition>@<offset>" ("" for a gap)
    detail: str


@dataclass(frozen=True)
class ChainStatus:
    """One (sender, partition) chain: ``ok`` or its most severe finding's kind, and every finding."""

    sender: str
    partition: int
    status: str
    links: int
    last_sequence: int
    findings: tuple[Finding, ...]


def link_of(record: Record) -> Link | None:
    """The chain link an audit record stands for, or None when it is not part of a chain (a record
    whose source is not the sender's own outbox, e.g. a corridor topic, is not)."""
    sender, sequence, topic = record.get("sender"), record.get("sequence"), record.get("topic")
    if not sender or not sequence or sequence < 1 or topic != topics.outbox(sender):
        return None
    if record.get("outcome") not in CHAINED_OUTCOMES or record.get("code") == "replay":
        return None
    return Link(sender, int(sequence), record.get("prev_hash"), record.get("envelope_hash"),
                str(topic), int(record.get("partition") or 0), int(record.get("offset") or 0))


def collect(partitions: Iterable[Sequence[Record]]) -> tuple[dict[ChainKey, list[Link]], list[Finding]]:
    """Links per chain (exact duplicates dropped) and the audit-order findings of each audit partition."""
    links: dict[ChainKey, list[Link]] = {}
    seen: set[Link] = set()
    findings: list[Finding] = []
    for records in partitions:
        last: dict[ChainKey, Link] = {}
        for link in filter(None, map(link_of, records)):
            if link in seen:
                continue
            seen.add(link)
            links.setdefault(link.chain, []).append(link)
            findings += audit_order(last.get(link.chain), link)
            last[link.chain] = link
    return links, findings


def audit_order(before: Link | None, link: Link) -> list[Finding]:
    if before is None or before.offset < link.offset:
        return []
    return [finding(link, "out_of_order", f"audit lists offset {link.offset} after offset {before.offset}")]


def finding(link: Link, kind: str, detail: str) -> Finding:
    return Finding(link.sender, link.partition, kind, link.sequence, link.position, detail)


def check_chain(key: ChainKey, links: Sequence[Link]) -> list[Finding]:
    """Forks, reordering, broken links and gaps of one chain's links (in source order)."""
    sender, partition = key
    ordered = sorted(links, key=lambda k: k.offset)
    first: dict[int, Link] = {}
    findings: list[Finding] = []
    highest = 0
    for link in ordered:
        findings += fork_or_reorder(first.get(link.sequence), link, highest)
        first.setdefault(link.sequence, link)
        highest = max(highest, link.sequence)
    findings += [broken for link in ordered for broken in broken_link(link, first.get(link.sequence - 1))]
    missing = sorted(set(range(1, highest + 1)) - set(first))
    findings += [Finding(sender, partition, "gap", n, "", f"sequence {n} never seen") for n in missing]
    return findings


def fork_or_reorder(earlier: Link | None, link: Link, highest: int) -> list[Finding]:
    if earlier is not None:
        if None in (earlier.envelope_hash, link.envelope_hash) or earlier.envelope_hash == link.envelope_hash:
            return []
        detail = f"sequence {link.sequence} also at {earlier.position} with another hash"
        return [finding(link, "fork", detail)]
    if link.sequence < highest:
        return [finding(link, "reorder", f"sequence {link.sequence} after sequence {highest}")]
    return []


def broken_link(link: Link, previous: Link | None) -> list[Finding]:
    """``prev_hash`` must be empty for sequence 1 and the previous envelope's hash after it."""
    if link.sequence == 1:
        expected: bytes | None = b""
    else:
        expected = previous.envelope_hash if previous is not None else None
    if expected is None or (link.prev_hash or b"") == expected:
        return []
    detail = f"prev_hash does not match the hash of sequence {link.sequence - 1}"
    return [finding(link, "broken_link", detail)]


def check(partitions: Iterable[Sequence[Record]]) -> tuple[ChainStatus, ...]:
    """The status of every (sender, partition) chain, from audit records grouped by audit
    partition (read order)."""
    links, order_findings = collect(partitions)
    result = []
    for key in sorted(links):
        ordering = [f for f in order_findings if (f.sender, f.partition) == key]
        findings = ordering + check_chain(key, links[key])
        result.append(status_of(key, links[key], findings))
    return tuple(result)


def status_of(key: ChainKey, links: Sequence[Link], findings: Sequence[Finding]) -> ChainStatus:
    kinds = {f.kind for f in findings}
    status = next((kind for kind in SEVERITY if kind in kinds), "ok")
    ordered = tuple(sorted(findings, key=lambda f: (f.sequence, SEVERITY.index(f.kind))))
    return ChainStatus(key[0], key[1], status, len(links), max(k.sequence for k in links), ordered)
