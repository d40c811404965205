"""Grid services: FCR droop, setpoints, FO droop curves (load convention: + = consume more)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evflex.control.services import (
    DroopCurve,
    Setpoint,
    active_setpoint,
    droop_delta_w,
    fcr_delta_w,
    frequency_gate,
    setpoint_delta_w,
)
from evflex.grid.health import FeedHealth, FeedStatus
from evflex.grid.samples import FrequencySample

BID = 1_000_000.0
freqs = st.floats(47.0, 53.0)


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        (50.0, 0.0),
        (50.01, 0.0),  # inside the 10 mHz deadband
        (49.99, 0.0),
        (49.9, -0.5 * BID),  # low frequency: consume less
        (50.1, 0.5 * BID),
        (49.8, -BID),
        (49.0, -BID),  # saturated beyond ±200 mHz
        (50.5, BID),
    ],
)
def test_fcr_points(f: float, expected: float) -> None:
    assert fcr_delta_w(f, BID) == pytest.approx(expected)


def test_fcr_deadband_is_a_jump_to_proportional_response() -> None:
    assert fcr_delta_w(49.9899, BID) == pytest.approx(-BID * 0.0101 / 0.2)


@given(freqs, freqs)
def test_fcr_bounded_monotone_and_odd(f1: float, f2: float) -> None:
    lo, hi = sorted((f1, f2))
    assert abs(fcr_delta_w(f1, BID)) <= BID
    assert fcr_delta_w(lo, BID) <= fcr_delta_w(hi, BID)
    assert fcr_delta_w(f1, BID) == pytest.approx(-fcr_delta_w(100.0 - f1, BID), abs=1e-3)


def test_setpoint_window_and_latest_wins() -> None:
    a, b = Setpoint(5e5, 0.0, 100.0), Setpoint(3e5, 50.0, 60.0)
    assert active_setpoint([a, b], 55.0) is b
    assert active_setpoint([a, b], 60.0) is a
    assert active_setpoint([a, b], 100.0) is None
    assert setpoint_delta_w(a, baseline_total_w=8e5, now=10.0) == pytest.approx(-3e5)
    assert setpoint_delta_w(a, 8e5, now=100.0) is None
    assert setpoint_delta_w(None, 8e5, now=1.0) is None
    with pytest.raises(ValueError):
        Setpoint(1.0, 10.0, 10.0)
    with pytest.raises(ValueError):
        Setpoint(math.inf, 0.0, 1.0)


CURVE = DroopCurve(((49.5, -2e5), (49.9, -1e5), (50.1, 0.0), (50.5, 1e5)))


def test_droop_curve_interpolates_and_is_flat_beyond_ends() -> None:
    assert droop_delta_w(CURVE, 49.0) == -2e5
    assert droop_delta_w(CURVE, 49.7) == pytest.approx(-1.5e5)
    assert droop_delta_w(CURVE, 50.0) == pytest.approx(-5e4)
    assert droop_delta_w(CURVE, 50.1) == 0.0
    assert droop_delta_w(CURVE, 51.0) == 1e5


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (((50.0, 0.0),), "at least two"),
        (((50.0, 0.0), (50.0, 1.0)), "increase strictly"),
        (((50.1, 0.0), (50.0, 1.0)), "increase strictly"),
        (((49.0, 1.0), (51.0, 0.0)), "destabilising"),
        (((46.0, 0.0), (51.0, 1.0)), "47"),
        (((49.0, math.nan), (51.0, 1.0)), "finite"),
    ],
)
def test_droop_curve_validation(points: tuple[tuple[float, float], ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DroopCurve(points)


@given(freqs, freqs)
def test_droop_monotone_within_curve_range(f1: float, f2: float) -> None:
    lo, hi = sorted((f1, f2))
    assert droop_delta_w(CURVE, lo) <= droop_delta_w(CURVE, hi)
    assert -2e5 <= droop_delta_w(CURVE, f1) <= 1e5


def test_frequency_gate_releases_on_an_unusable_feed() -> None:
    bad = FeedHealth()  # no data yet
    good = FeedHealth(FeedStatus.OK, "", FrequencySample(1.0, 49.9), 1.0, 3)
    assert frequency_gate(bad, -5e5) is None
    assert frequency_gate(good, -5e5) == -5e5
    assert frequency_gate(good, None) is None
