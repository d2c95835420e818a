"""Statistics that cannot identify anyone: k-anonymous counts of cases from a node's store.

``case_facts`` folds a node's decrypted inbox records into one ``CaseFacts`` per case (year of
registration, corridor, sex, broad age band, type of exploitation, case status), with code lists
aligned to HTCDS v2 and the CTDC public columns (``docs/statistics.md`` has the mapping).
``export`` counts cases per combination of those quasi-identifiers and makes the table
k-anonymous (k >= 11, CTDC's rule) by global recoding — one dimension at a time is generalised
one level up its hierarchy, the same for every row, so the released cells partition the cases and
cannot be subtracted from each other — then suppresses the cells still under k and says how many.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from casebridge.core.errors import Malformed

MIN_K = 11
"""CTDC's published rule: no released combination stands for fewer than 11 victims."""

ANY = "*"
"""A value generalised away entirely."""

DIMENSIONS: tuple[str, ...] = ("year", "corridor", "sex", "age_band", "exploitation", "status")

AGE_BANDS: tuple[tuple[int, int, str], ...] = (
    (0, 8, "0--8"), (9, 17, "9--17"), (18, 20, "18--20"), (21, 23, "21--23"), (24, 26, "24--26"),
    (27, 29, "27--29"), (30, 38, "30--38"), (39, 47, "39--47"), (48, 200, "48+"),
)
"""CTDC ``ageBroad`` bands."""

SEXES = {"female": "Female", "male": "Male", "other": "Other"}
EXPLOITATION = {
    "labour": "forced_labour", "sexual": "sexual_exploitation", "forced_marriage": "forced_marriage",
    "begging": "forced_begging", "criminal_activity": "forced_criminality", "other": "other",
}
"""The schemas' ``exploitation_types`` values -> HTCDS ``vic_TypeOfExploitation`` codes."""

FOLLOWUP_EVENTS = frozenset({"reintegration.stage_changed", "followup.recorded", "reception.completed"})


@dataclass(frozen=True)
class CaseFacts:
    """What the statistics know of one case; never a name, never the case reference."""

    year: str = "unknown"
    corridor: str = "unknown"  # "<citizenship>-><country of exploitation>", ISO 3166 alpha-2
    sex: str = "Unknown"
    age_band: str = "unknown"
    exploitation: str = "unknown"
    status: str = "Active"  # HTCDS cas_Status: Active, FollowUp, Closed


@dataclass(frozen=True)
class Cell:
    """One released row: a combination of (possibly generalised) values and its case count."""

    values: tuple[str, ...]  # in DIMENSIONS order
    count: int


@dataclass(frozen=True)
class Export:
    """A k-anonymous table: released cells, how many cells were suppressed, what was recoded."""

    k: int
    cells: tuple[Cell, ...]
    cases: int  # cases counted before suppression
    suppressed_cells: int
    levels: Mapping[str, int]  # dimension -> generalisation level applied (0: as recorded)


def age_band(years: int | None) -> str:
    if years is None or years < 0:
        return "unknown"
    return next(label for low, high, label in AGE_BANDS if low <= years <= high)


def years_between(born: date, then: date) -> int:
    return then.year - born.year - ((then.month, then.day) < (born.month, born.day))


def case_facts(records: Iterable[Mapping[str, Any]], own_country: str) -> list[CaseFacts]:
    """One ``CaseFacts`` per case of a node's inbox records (as ``GET /inbox`` shows them)."""
    by_case: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_case.setdefault(str(record["case_ref"]), []).append(record)
    return [_facts(sorted(rs, key=lambda r: str(r.get("created_at", ""))), own_country)
            for _, rs in sorted(by_case.items())]


def _facts(records: list[Mapping[str, Any]], own_country: str) -> CaseFacts:
    first = str(records[0].get("created_at", ""))
    identity = _merged(records, "identity")
    operational = _merged(records, "operational")
    interview = _merged(records, "case_interview")
    origin = identity.get("nationality_claimed") or "unknown"
    host = operational.get("host_country") or str(records[0]["sender"]).split(".", 1)[0]
    if host == origin:
        host = own_country
    return CaseFacts(
        year=first[:4] or "unknown",
        corridor=f"{origin}->{host}",
        sex=SEXES.get(str(identity.get("sex")), "Unknown"),
        age_band=age_band(_age(identity, first[:10])),
        exploitation=_exploitation(interview.get("exploitation_types") or []),
        status=_status({str(r["event_type"]) for r in records}),
    )


def _merged(records: list[Mapping[str, Any]], category: str) -> dict[str, Any]:
    """A category's fields over the case's events; a later non-empty value wins."""
    merged: dict[str, Any] = {}
    for record in records:
        section = (record.get("payload") or {}).get(category) or {}
        merged.update({k: v for k, v in section.items() if v not in (None, [], "")})
    return merged


def _age(identity: Mapping[str, Any], registered: str) -> int | None:
    born = identity.get("date_of_birth")
    if isinstance(born, str) and len(registered) == 10:
        return years_between(date.fromisoformat(born[:10]), date.fromisoformat(registered))
    estimate = identity.get("age_estimate")
    return estimate if isinstance(estimate, int) else None


def _exploitation(types: Iterable[str]) -> str:
    codes = sorted({EXPLOITATION.get(t, "other") for t in types})
    return "unknown" if not codes else codes[0] if len(codes) == 1 else "multiple"


def _status(event_types: set[str]) -> str:
    if "case.closed" in event_types:
        return "Closed"
    return "FollowUp" if event_types & FOLLOWUP_EVENTS else "Active"


def generalise(dimension: str, value: str, level: int) -> str:
    """``value`` of ``dimension`` at generalisation ``level`` (0 as recorded; the top is ``ANY``)."""
    if level == 0 or (level == 1 and value == "unknown"):
        return value
    if dimension == "age_band" and level == 1:
        return "0--17" if value in ("0--8", "9--17") else "18+"
    if dimension == "corridor" and level == 1 and "->" in value:
        return f"*->{value.split('->', 1)[1]}"  # keep the country of exploitation
    if dimension == "year" and level == 1 and value.isdigit():
        start = int(value) - int(value) % 5
        return f"{start}--{start + 4}"
    return ANY


def top_level(dimension: str) -> int:
    """The level at which ``dimension`` becomes ``ANY`` for every value."""
    return 2 if dimension in ("age_band", "corridor", "year") else 1


def count(facts: Iterable[CaseFacts], levels: Mapping[str, int]) -> Counter[tuple[str, ...]]:
    return Counter(tuple(generalise(d, getattr(f, d), levels.get(d, 0)) for d in DIMENSIONS)
                   for f in facts)


def export(facts: Iterable[CaseFacts], k: int = MIN_K, max_suppressed: float = 0.05) -> Export:
    """Counts per combination, recoded until at most ``max_suppressed`` of the cases sit in cells
    under ``k``; those cells are then suppressed (never released)."""
    if k < MIN_K:
        raise Malformed(f"k must be at least {MIN_K} (CTDC's rule), not {k}")
    cases = list(facts)
    levels = dict.fromkeys(DIMENSIONS, 0)
    counts = count(cases, levels)
    while _small(counts, k) > max_suppressed * len(cases):
        dimension = _next_to_recode(counts, levels)
        if dimension is None:
            break
        levels[dimension] += 1
        counts = count(cases, levels)
    released = tuple(Cell(v, n) for v, n in sorted(counts.items()) if n >= k)
    return Export(k, released, len(cases), len(counts) - len(released), levels)


def _small(counts: Counter[tuple[str, ...]], k: int) -> int:
    return sum(n for n in counts.values() if n < k)


def _next_to_recode(counts: Counter[tuple[str, ...]], levels: Mapping[str, int]) -> str | None:
    """The dimension with the most distinct values that can still be generalised (Datafly)."""
    open_ = [d for d in DIMENSIONS if levels[d] < top_level(d)]
    if not open_:
        return None
    distinct = {d: len({v[DIMENSIONS.index(d)] for v in counts}) for d in open_}
    return max(open_, key=lambda d: (distinct[d], -DIMENSIONS.index(d)))
