"""Available flexibility and its P90 figure."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evflex.control.availability import (
    DepartureModel,
    flexibility,
    p90_w,
    quantile_w,
    stay_probability,
)
from evflex.control.units import SessionInfo, Unit

M = DepartureModel(declared_sigma_s=1800.0, mean_dwell_s=4 * 3600.0)


def test_flexibility_sums_headroom() -> None:
    units = [
        Unit("car", 1, 7_000.0, 7_000.0, 4_140.0, 0.0, 4140.0),
        Unit("v2g", 1, 5_000.0, 10_000.0, -10_000.0, -10_000.0, 0.0),
        Unit("bess", 1, 0.0, 50_000.0, -50_000.0, -50_000.0, 0.0, stationary=True),
    ]
    f = flexibility(units)
    assert (f.up_w, f.down_w, f.down_hard_w) == (55_000.0, 67_860.0, 72_000.0)


def test_stay_probability_models() -> None:
    assert stay_probability(None, 0.0, 4 * 3600.0, M) == pytest.approx(math.exp(-1))
    assert stay_probability(7200.0, 0.0, 3600.0, M) == pytest.approx(0.9772, abs=1e-4)  # 2 σ
    assert stay_probability(3600.0, 0.0, 3600.0, M) == pytest.approx(0.5)
    sharp = DepartureModel(declared_sigma_s=0.0)
    assert stay_probability(3601.0, 0.0, 3600.0, sharp) == 1.0
    assert stay_probability(3600.0, 0.0, 3600.0, sharp) == 0.0


def test_quantile_normal_and_cantelli() -> None:
    pairs = [(10_000.0, 0.9)] * 100
    mean, sd = 900_000.0, math.sqrt(100 * 1e8 * 0.09)
    assert quantile_w(pairs) == pytest.approx(mean - 1.2816 * sd, rel=1e-4)
    assert quantile_w(pairs, "cantelli") == pytest.approx(mean - 3 * sd)
    assert quantile_w([(10_000.0, 0.5)]) == 0.0  # clipped


@given(
    st.lists(st.tuples(st.floats(0, 22_000), st.floats(0, 1)), min_size=1, max_size=50),
    st.sampled_from(["normal", "cantelli"]),
)
def test_quantile_bounded_by_mean(pairs: list[tuple[float, float]], method: str) -> None:
    q = quantile_w(pairs, method)  # type: ignore[arg-type]
    assert 0.0 <= q <= sum(c * p for c, p in pairs) + 1e-6


def test_cantelli_p90_holds_in_monte_carlo() -> None:
    rng = random.Random(5)
    units, sessions = [], {}
    for i in range(40):
        units.append(Unit(f"cs{i}", 1, rng.uniform(4_000, 11_000), 11_000.0, 0.0, 0.0, 4140.0))
        sessions[(f"cs{i}", 1)] = SessionInfo(departure_ts=rng.uniform(0, 4 * 3600))
    x = p90_w(units, sessions, 0.0, 3600.0, model=M, method="cantelli")
    assert x > 0
    qs = [stay_probability(sessions[(u.station_id, 1)].departure_ts, 0.0, 3600.0, M) for u in units]
    hits = 0
    for _ in range(4000):
        total = sum(u.baseline_w for u, q in zip(units, qs, strict=True) if rng.random() < q)
        hits += total >= x
    assert hits / 4000 >= 0.9


def test_p90_stationary_units_always_count_and_longer_period_never_helps() -> None:
    bess = Unit("bess", 1, 0.0, 50_000.0, -50_000.0, -50_000.0, 0.0, stationary=True)
    car = Unit("car", 1, 11_000.0, 11_000.0, 0.0, 0.0, 4140.0)
    assert p90_w([bess], {}, 0.0, 1e6) == 50_000.0
    assert p90_w([bess], {}, 0.0, 900.0, direction="up") == 50_000.0
    sessions = {("car", 1): SessionInfo(departure_ts=7200.0)}
    periods = [60.0, 900.0, 3600.0, 7200.0, 14_400.0]
    values = [p90_w([car], sessions, 0.0, t) for t in periods]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(11_000.0, rel=1e-2)
