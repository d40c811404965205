"""Composite schedule evaluation: conformance examples and properties."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from evflex.sim.schedule import (
    Period,
    Profile,
    Purpose,
    active_period,
    composite,
    composite_periods,
    stack_order,
)

T0 = 1_800_000_000.0  # a fixed instant: tests never read the clock


def watts(limit: float, amps: bool, phases: int | None) -> float:
    return limit * 230.0 * (phases or 3) if amps else limit


def profile(
    pid: int,
    purpose: Purpose,
    limits: list[tuple[int, float]],
    *,
    level: int = 0,
    evse: int = 1,
    kind: str = "Absolute",
    start: float | None = T0,
    duration: float | None = None,
    valid_from: float | None = None,
    valid_to: float | None = None,
    recurrency: str | None = None,
    tx: str | None = None,
    amps: bool = False,
) -> Profile:
    return Profile(
        pid,
        level,
        purpose,
        kind,
        tuple(Period(s, v) for s, v in limits),
        amps,
        evse=0 if purpose is Purpose.STATION_MAX else evse,
        start=start,
        duration=duration,
        valid_from=valid_from,
        valid_to=valid_to,
        recurrency=recurrency,
        transaction_id=tx,
        received_at=T0,
    )


def limit_at(profiles: list[Profile], t: float, tx: str | None = "1") -> float | None:
    return composite(
        stack_order(profiles), t, evse=1, tx_id=tx, tx_start=T0 if tx else None, to_watts=watts
    ).watts


def test_no_profile_means_unconstrained() -> None:
    assert limit_at([], T0) is None


def test_valid_to_restores_unconstrained_behaviour() -> None:
    """1.6 §7.7 validTo: "Point in time at which the profile stops to be valid". After it the
    station falls back to no limit: a grid curtailment releases itself if the CSMS dies."""
    p = profile(1, Purpose.TX_DEFAULT, [(0, 0.0)], valid_to=T0 + 60)
    assert limit_at([p], T0 + 59) == 0.0
    assert limit_at([p], T0 + 60) is None


def test_duration_ends_the_schedule() -> None:
    """1.6 §7.13 duration: "Duration of the charging schedule in seconds. If the duration is
    left empty, the last period will continue indefinitely"."""
    p = profile(1, Purpose.TX, [(0, 1000.0)], kind="Relative", start=None, duration=300, tx="1")
    assert limit_at([p], T0 + 299) == 1000.0
    assert limit_at([p], T0 + 300) is None


def test_highest_stack_level_prevails_and_falls_back_when_it_ends() -> None:
    """1.6 §3.13.2: "the profile with the highest stackLevel ... prevails". When that one has
    no period in force, the next lower stackLevel applies."""
    low = profile(1, Purpose.TX_DEFAULT, [(0, 11000.0)], level=0)
    high = profile(2, Purpose.TX_DEFAULT, [(0, 4000.0)], level=5, duration=600)
    assert limit_at([low, high], T0 + 10) == 4000.0
    assert limit_at([low, high], T0 + 600) == 11000.0


def test_tx_profile_overrules_default_and_max_caps() -> None:
    """1.6 §3.13.4: TxProfile overrules TxDefaultProfile; ChargePointMaxProfile limits the
    overall result."""
    default = profile(1, Purpose.TX_DEFAULT, [(0, 3000.0)], level=9)
    tx = profile(2, Purpose.TX, [(0, 9000.0)], level=0, tx="1")
    cap = profile(3, Purpose.STATION_MAX, [(0, 7000.0)])
    assert limit_at([default, tx], T0) == 9000.0
    assert limit_at([default, tx, cap], T0) == 7000.0
    assert limit_at([default, cap], T0, tx=None) == 3000.0


def test_tx_profile_only_for_its_transaction() -> None:
    tx = profile(2, Purpose.TX, [(0, 9000.0)], tx="42")
    assert limit_at([tx], T0, tx="41") is None
    assert limit_at([tx], T0, tx="42") == 9000.0


def test_periods_step_and_recurring_daily() -> None:
    p = profile(
        1,
        Purpose.TX_DEFAULT,
        [(0, 1000.0), (3600, 2000.0)],
        kind="Recurring",
        recurrency="Daily",
    )
    assert limit_at([p], T0 + 10) == 1000.0
    assert limit_at([p], T0 + 3600) == 2000.0
    assert limit_at([p], T0 + 86_400 + 10) == 1000.0


def test_amps_convert_with_the_periods_phases() -> None:
    p = Profile(1, 0, Purpose.TX_DEFAULT, "Absolute", (Period(0, 16.0, 1),), True, 1, start=T0)
    assert limit_at([p], T0) == 16.0 * 230.0


def test_valid_from_in_the_future_reports_when_it_starts() -> None:
    p = profile(1, Purpose.TX_DEFAULT, [(0, 5.0)], valid_from=T0 + 100)
    period, until = active_period(p, T0, None)
    assert period is None
    assert until == T0 + 100


def test_composite_periods_merge_and_offsets() -> None:
    p = profile(1, Purpose.TX_DEFAULT, [(0, 1000.0), (60, 1000.0), (120, 500.0)], duration=300)
    periods = composite_periods(
        stack_order([p]), T0, 600, evse=1, tx_id=None, tx_start=None, to_watts=watts
    )
    assert periods == [(0, 1000.0, None), (120, 500.0, None), (300, None, None)]


# -- properties --------------------------------------------------------------------------
limits = st.floats(min_value=-20_000, max_value=50_000, allow_nan=False)
periods = st.lists(
    st.tuples(st.integers(min_value=1, max_value=3_600), limits), min_size=0, max_size=4
)


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    purpose = draw(st.sampled_from(list(Purpose)))
    steps = draw(periods)
    start = 0
    table = [(0, draw(limits))]
    for step, value in steps:
        start += step
        table.append((start, value))
    offset = draw(st.integers(min_value=-3_600, max_value=3_600))
    return profile(
        draw(st.integers(min_value=1, max_value=50)),
        purpose,
        table,
        level=draw(st.integers(min_value=0, max_value=5)),
        start=T0 + offset,
        duration=draw(st.none() | st.integers(min_value=1, max_value=7_200)),
        valid_to=draw(st.none() | st.integers(min_value=0, max_value=7_200).map(lambda s: T0 + s)),
        tx=draw(st.sampled_from([None, "1", "2"])),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(profiles(), max_size=6), st.integers(min_value=0, max_value=7_200))
def test_composite_is_min_of_max_and_tx_or_default(ps: list[Profile], dt: int) -> None:
    """The composite equals min(StationMax winner, Tx winner if any else TxDefault winner)."""
    t = T0 + dt
    ordered = stack_order(ps)

    def winner(purpose: Purpose) -> float | None:
        for p in ordered:
            if p.purpose is not purpose:
                continue
            if purpose is Purpose.TX and p.transaction_id not in (None, "1"):
                continue
            period, _ = active_period(p, t, T0)
            if period is not None:
                return period.limit
        return None

    tx = winner(Purpose.TX)
    candidates = [winner(Purpose.STATION_MAX), tx if tx is not None else winner(Purpose.TX_DEFAULT)]
    present = [c for c in candidates if c is not None]
    expected = min(present) if present else None
    assert limit_at(ps, t, tx="1") == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(profiles(), max_size=6), st.integers(min_value=0, max_value=7_200), st.data())
def test_until_is_a_sound_cache_horizon(ps: list[Profile], dt: int, data: st.DataObject) -> None:
    """Re-evaluating only at `until` gives the same answer as evaluating every second."""
    t = T0 + dt
    now = composite(stack_order(ps), t, evse=1, tx_id="1", tx_start=T0, to_watts=watts)
    assert now.until > t
    horizon = min(now.until, t + 10_000)
    if math.isinf(horizon) or horizon - t < 1e-6:
        return
    later = data.draw(st.floats(min_value=t, max_value=horizon, exclude_max=True))
    again = composite(stack_order(ps), later, evse=1, tx_id="1", tx_start=T0, to_watts=watts)
    assert again.watts == now.watts
