"""`delivery_figures`: FCR delivery figures from a service's 1 s record rows (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from evflex.control.loop import RecordRow
from evflex.demo import delivery_figures

STEP = 1_800_000_000.0
BASE = 1_000_000.0
BID = 300_000.0


def row(at_s: float, change_w: float, *, delta_w: float = -BID, base: float = BASE) -> RecordRow:
    """A row `at_s` after the step: measured = base + change, target = base + delta."""
    ts = datetime.fromtimestamp(STEP + at_s, UTC)
    return RecordRow(ts, 49.8, "ok", delta_w, base + delta_w, base + change_w, base)


def response(changes: list[float], first_s: float = 0.4) -> list[RecordRow]:
    return [row(first_s + k, c) for k, c in enumerate(changes)]


def test_a_step_delivered_within_seconds() -> None:
    # rows 0.4, 1.4, ... s after the step; the fleet reaches 95 % at 3.4 s
    rows = [row(-1.6, 0.0, delta_w=0.0), row(-0.6, 0.0, delta_w=0.0)]
    rows += response([0, -100e3, -200e3, -290e3] + [-300e3] * 8 + [-310e3, -330e3])
    f = delivery_figures(rows, BID, STEP)
    assert f.rows == 14 and f.baseline_w == BASE  # the rows before the step do not count
    assert f.t95_s == pytest.approx(3.4)
    assert f.at_10s_s == pytest.approx(9.4) and f.at_10s_pct == pytest.approx(100.0)  # by 10 s
    assert f.at_end_pct == pytest.approx(110.0) and f.span_s == pytest.approx(13.4)
    # after full activation (3.4 s on): 11 rows, the last one 10 % of the bid off target
    assert f.within_rows == 11 and f.within_share == pytest.approx(10 / 11)


def test_never_reaching_95_percent_judges_from_the_30_s_full_activation_time() -> None:
    rows = response([-0.8 * BID] * 40)
    f = delivery_figures(rows, BID, STEP)
    assert f.t95_s is None
    assert f.at_10s_pct == pytest.approx(80.0) and f.at_end_pct == pytest.approx(80.0)
    assert f.within_rows == 10 and f.within_share == 0.0  # rows at 30.4 … 39.4 s, all 20 % off
    short = delivery_figures(rows[:20], BID, STEP)
    assert short.within_share is None and short.within_rows == 0


def test_over_frequency_counts_more_consumption_as_delivery() -> None:
    rows = [row(0.5 + k, +BID, delta_w=+BID) for k in range(12)]
    f = delivery_figures(rows, BID, STEP)
    assert f.at_10s_pct == pytest.approx(100.0) and f.t95_s == pytest.approx(0.5)


def test_each_row_is_judged_against_its_own_baseline() -> None:
    # an uncontrolled car leaves: the meter-before baseline and the measurement drop alike
    rows = [row(0.5, -BID), row(1.5, -BID, base=BASE - 7_000.0)]
    f = delivery_figures(rows, BID, STEP)
    assert f.at_end_pct == pytest.approx(100.0) and f.within_share == 1.0


def test_at_10_s_is_what_was_delivered_by_then() -> None:
    rows = response([-0.5 * BID] * 10 + [-BID] * 5)  # rows 0.4 … 9.4 s at 50 %, then 100 %
    f = delivery_figures(rows, BID, STEP)
    assert f.at_10s_s == pytest.approx(9.4) and f.at_10s_pct == pytest.approx(50.0)
    assert f.t95_s == pytest.approx(10.4)


def test_a_fleet_moving_the_wrong_way_is_negative_delivery() -> None:
    f = delivery_figures(response([+0.1 * BID] * 12), BID, STEP)
    assert f.at_10s_pct == pytest.approx(-10.0) and f.t95_s is None


def test_no_rows_after_the_step() -> None:
    f = delivery_figures([row(-0.5, 0.0, delta_w=0.0)], BID, STEP)
    assert (f.rows, f.baseline_w, f.at_10s_pct, f.t95_s) == (0, None, None, None)
    assert f.at_end_pct is None and f.within_share is None
