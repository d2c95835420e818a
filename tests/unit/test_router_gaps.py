"""The router's skip detection (router/gaps.py): which offsets a record's arrival leaves unrouted."""

from __future__ import annotations

from casebridge.router import gaps


def test_contiguous_and_first_records_leave_no_gap() -> None:
    """The next offset, a first record ever (no mark yet) and a record read again are not skips."""
    assert gaps.gap(551, 552) == range(0)
    assert gaps.gap(None, 9000) == range(0)
    assert gaps.gap(551, 300) == range(0)  # read again after a seek back: a redelivery


def test_a_forward_jump_names_exactly_the_skipped_offsets() -> None:
    """From one past the last routed offset up to, not including, the record that arrived."""
    missing = gaps.gap(552, 651)
    assert (missing.start, missing.stop - 1, len(missing)) == (553, 650, 98)
    assert list(gaps.gap(-1, 2)) == [0, 1]  # nothing routed yet in a fresh partition (mark -1)


def test_marks_are_per_topic_and_partition() -> None:
    assert gaps.mark("cb.out.TH.MSDHS", 0) != gaps.mark("cb.out.TH.MSDHS", 1)
    assert gaps.mark("cb.out.TH.MSDHS", 0) != gaps.mark("cb.out.KH.MOSVY", 0)
