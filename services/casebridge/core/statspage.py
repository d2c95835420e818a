"""A k-anonymous export as files: CSV with HTCDS/CTDC column names, and a static HTML page.

The page has inline SVG bar charts (no script, no network) of the released cells summed by one
dimension at a time; a bar is a sum of released cells, each of at least k cases.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from html import escape

from casebridge.core.stats import DIMENSIONS, Export

COLUMNS: dict[str, str] = {
    "year": "yearOfRegistration",
    "corridor": "corridor",  # citizenship -> CountryOfExploitation
    "sex": "gender",
    "age_band": "ageBroad",
    "exploitation": "typeOfExploitation",
    "status": "cas_Status",
}
"""Our dimension -> the CSV column (CTDC's name where it has one, else HTCDS's)."""

TITLES = {"year": "Year of registration", "corridor": "Corridor (citizenship -> exploitation)",
          "sex": "Sex", "age_band": "Age band", "exploitation": "Type of exploitation",
          "status": "Case status"}


def to_csv(table: Export) -> str:
    """The released cells, one row each, with a ``victims`` count column."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*(COLUMNS[d] for d in DIMENSIONS), "victims"])
    for cell in table.cells:
        writer.writerow([*cell.values, cell.count])
    return out.getvalue()


def totals(table: Export, dimension: str) -> list[tuple[str, int]]:
    """Released counts summed by one dimension, largest first."""
    index = DIMENSIONS.index(dimension)
    sums: Counter[str] = Counter()
    for cell in table.cells:
        sums[cell.values[index]] += cell.count
    return sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))


def bar_chart(rows: list[tuple[str, int]], width: int = 520) -> str:
    """One horizontal bar per row, as inline SVG."""
    top = max((n for _, n in rows), default=1)
    height = 22 * len(rows) + 4
    bars = []
    for i, (label, n) in enumerate(rows):
        y, length = 22 * i + 2, max(1, round((width - 230) * n / top))
        bars.append(f'<text x="0" y="{y + 14}" font-size="12">{escape(label)}</text>'
                    f'<rect x="170" y="{y}" width="{length}" height="16" fill="#3a6ea5"/>'
                    f'<text x="{176 + length}" y="{y + 14}" font-size="12">{n}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img">{"".join(bars)}</svg>')


def to_html(table: Export, title: str) -> str:
    """A self-contained page: what was suppressed and recoded, a chart per dimension, the table."""
    recoded = ", ".join(f"{d} (level {n})" for d, n in table.levels.items() if n) or "none"
    charts = "".join(f"<h2>{TITLES[d]}</h2>{bar_chart(totals(table, d))}" for d in DIMENSIONS)
    head = "".join(f"<th>{COLUMNS[d]}</th>" for d in DIMENSIONS)
    rows = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in c.values)
                   + f"<td>{c.count}</td></tr>" for c in table.cells)
    released = sum(c.count for c in table.cells)
    return (
        f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}"
        f"</title></head><body><h1>{escape(title)}</h1>"
        f"<p>k-anonymous with k = {table.k}: every row stands for at least {table.k} victims. "
        f"{released} victims in {len(table.cells)} released cells; {table.suppressed_cells} cells "
        f"suppressed; generalised: {escape(recoded)}.</p>{charts}"
        f"<h2>Released cells</h2><table><tr>{head}<th>victims</th></tr>{rows}</table></body></html>"
    )
