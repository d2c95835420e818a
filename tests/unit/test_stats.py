"""k-anonymous statistics (``casebridge.core.stats`` and ``statspage``): known answers and a property."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casebridge.cli import main
from casebridge.core import stats, statspage
from casebridge.core.stats import CaseFacts
from casebridge.node import store


def cases(n: int, **values: str) -> list[CaseFacts]:
    base = {"year": "2025", "corridor": "KH->TH", "sex": "Female", "age_band": "18--20",
            "exploitation": "forced_labour", "status": "Active"}
    return [CaseFacts(**{**base, **values})] * n


def test_a_known_population_releases_its_large_cells_and_suppresses_the_lone_case() -> None:
    """12 and 11 alike cases are released as they are; one case on its own is suppressed."""
    population = cases(12) + cases(11, corridor="MM->TH", sex="Male", age_band="30--38") + cases(
        1, year="2024", corridor="LA->TH", sex="Male", age_band="9--17", status="Closed")
    table = stats.export(population)
    assert [(c.values, c.count) for c in table.cells] == [
        (("2025", "KH->TH", "Female", "18--20", "forced_labour", "Active"), 12),
        (("2025", "MM->TH", "Male", "30--38", "forced_labour", "Active"), 11),
    ]
    assert table.suppressed_cells == 1
    assert set(table.levels.values()) == {0}


def test_two_small_age_bands_are_generalised_together_rather_than_suppressed() -> None:
    """Six cases aged 18-20 and six aged 21-23 are released as one cell of twelve aged 18+."""
    table = stats.export(cases(6) + cases(6, age_band="21--23"))
    assert [(c.values[3], c.count) for c in table.cells] == [("18+", 12)]
    assert table.levels["age_band"] == 1 and table.suppressed_cells == 0


def test_fewer_than_k_cases_in_all_release_nothing() -> None:
    """Ten identical cases are still fewer than eleven: the export is empty, one cell suppressed."""
    table = stats.export(cases(10))
    assert table.cells == () and table.suppressed_cells == 1


def test_k_below_the_ctdc_rule_is_refused() -> None:
    """An export with k under 11 is refused outright."""
    with pytest.raises(ValueError, match="at least 11"):
        stats.export(cases(20), k=5)


FACTS = st.builds(
    CaseFacts,
    year=st.sampled_from(["2023", "2024", "2025", "unknown"]),
    corridor=st.sampled_from(["KH->TH", "MM->TH", "LA->TH", "VN->CN", "unknown"]),
    sex=st.sampled_from(["Female", "Male", "Other", "Unknown"]),
    age_band=st.sampled_from([label for _, _, label in stats.AGE_BANDS] + ["unknown"]),
    exploitation=st.sampled_from(sorted(stats.EXPLOITATION.values())),
    status=st.sampled_from(["Active", "FollowUp", "Closed"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(FACTS, max_size=400), st.integers(min_value=11, max_value=30))
def test_no_released_row_stands_for_fewer_than_k_cases(population: list[CaseFacts], k: int) -> None:
    """Whatever the population, every released cell counts at least k cases, and cells never overlap."""
    table = stats.export(population, k=k)
    assert all(cell.count >= k for cell in table.cells)
    assert len({cell.values for cell in table.cells}) == len(table.cells)
    assert sum(cell.count for cell in table.cells) <= len(population)


def record(case: str, event_type: str, created: str, **payload: Any) -> dict[str, Any]:
    return {"case_ref": case, "event_type": event_type, "sender": "TH.MSDHS",
            "created_at": created, "payload": payload}


def test_case_facts_fold_a_case_s_events_into_htcds_codes() -> None:
    """Identity, host country, exploitation types and closure across events make one case's facts."""
    records = [
        record("c1", "origin.notified", "2025-03-02T10:00:00+00:00",
               operational={"host_country": "TH"},
               identity={"sex": "female", "date_of_birth": "2008-06-01", "nationality_claimed": "KH"}),
        record("c1", "referral.sent", "2025-04-01T10:00:00+00:00",
               case_interview={"exploitation_types": ["labour"]}),
        record("c1", "case.closed", "2025-09-01T10:00:00+00:00"),
    ]
    assert stats.case_facts(records, "KH") == [CaseFacts(
        "2025", "KH->TH", "Female", "9--17", "forced_labour", "Closed")]


def test_the_csv_and_page_carry_only_released_cells_and_the_suppression_count() -> None:
    """The CSV has the CTDC/HTCDS columns and k-anonymous rows; the page says what was suppressed."""
    table = stats.export(cases(24) + cases(1, corridor="VN->CN"))
    text = statspage.to_csv(table)
    assert text.splitlines() == [
        "yearOfRegistration,corridor,gender,ageBroad,typeOfExploitation,cas_Status,victims",
        "2025,KH->TH,Female,18--20,forced_labour,Active,24",
    ]
    page = statspage.to_html(table, "KH.MOSVY")
    assert "1 cells suppressed" in page and "<svg" in page and "VN-&gt;CN" not in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_the_cli_exports_a_node_store_to_csv_and_html(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``casebridge stats export`` counts a node's stored cases and writes both files."""
    monkeypatch.setenv("CASEBRIDGE_HOME", str(tmp_path))
    conn = store.connect(tmp_path / "nodes" / "KH.MOSVY" / "node.sqlite")
    for i in range(12):
        store.store_inbound(conn, {**record(f"c{i}", "origin.notified", "2025-03-02T10:00:00+00:00",
                                            identity={"sex": "male", "nationality_claimed": "KH"}),
                                   "event_id": f"e{i}"}, datetime(2026, 1, 1, tzinfo=UTC))
    assert main(["stats", "export", "--as", "KH.MOSVY", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "stats.csv").read_text().splitlines()[1] == (
        "2025,KH->TH,Male,unknown,unknown,Active,12")
    assert "0 cells suppressed" in (tmp_path / "out" / "stats.html").read_text()

