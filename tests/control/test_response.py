"""Per-unit response checks: tolerance, verdicts, the delay learned per model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from evflex.control.response import (
    Expectation,
    ResponseParams,
    expected_delay_s,
    judge,
    needs_check,
    percentile,
)

P = ResponseParams(default_delay_s=6.0, min_delay_s=3.0, max_delay_s=15.0, margin_s=1.5)


def test_small_reductions_are_not_checked() -> None:
    assert not needs_check(6_900.0, 7_000.0, P)  # within 300 W: noise
    assert needs_check(3_000.0, 7_000.0, P)


def test_verdicts() -> None:
    exp = Expectation(limit_w=3_000.0, from_w=7_000.0, accepted_at=0.0, due_at=6.0, model="m")
    assert judge(exp, 3_200.0, 1.0, P) == "moved"  # within tolerance of the limit
    assert judge(exp, 7_000.0, 5.9, P) == "pending"
    assert judge(exp, 7_000.0, 6.0, P) == "late"
    assert judge(exp, 2_000.0, 60.0, P) == "moved"  # below the limit is fine


def test_expected_delay_uses_the_default_until_enough_observations() -> None:
    assert expected_delay_s([1.0] * (P.min_observations - 1), P) == 6.0
    quick = [1.0 + 0.1 * i for i in range(P.min_observations)]  # p90 = 2.8 s
    assert expected_delay_s(quick, P) == percentile(quick, 0.9) + 1.5
    assert expected_delay_s([0.1] * 50, P) == 3.0  # never below the minimum
    assert expected_delay_s([40.0] * 50, P) == 15.0  # never above the maximum


@given(st.lists(st.floats(0.0, 100.0), min_size=20, max_size=200))
def test_expected_delay_is_bounded(observed: list[float]) -> None:
    assert P.min_delay_s <= expected_delay_s(observed, P) <= P.max_delay_s
