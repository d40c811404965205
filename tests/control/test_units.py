"""Unit descriptors and baseline capture from fleet state."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evflex.control.baseline import capture_baseline
from evflex.control.units import (
    BessSpec,
    EvseSpec,
    SessionInfo,
    a_to_w,
    departure_floor_w,
    ev_unit,
    session_from_needs,
    units_from_fleet,
    w_to_a,
)
from evflex.fleet.model import ChargingNeeds, EvseStatus

from .fleet_helpers import T0, fleet_of

H = 900.0
AC = EvseSpec()  # 11,040 W, 3 × 230 V, 6 A minimum
GAP = 6 * 230 * 3


def test_amps_watts() -> None:
    assert a_to_w(16, 230, 3) == 11_040
    assert w_to_a(4140, 230, 3) == pytest.approx(6.0)


def test_departure_floor_cases() -> None:
    assert departure_floor_w(0.0, 3600, 11_000, H) == 0.0
    # 10 kWh in 2 h at 11 kW: plenty of slack, may pause for 15 min
    assert departure_floor_w(10_000, 7200, 11_000, H) == 0.0
    # 20 kWh in 2 h: 72 MJ − 11 kW·6300 s = 2.7 MJ over 900 s → 3 kW
    assert departure_floor_w(20_000, 7200, 11_000, H) == pytest.approx(3000.0)
    assert departure_floor_w(1_000, 600, 11_000, H) == pytest.approx(6000.0)
    assert departure_floor_w(50_000, 600, 11_000, H) == 11_000  # cannot be met: full power
    assert departure_floor_w(1_000, 0, 11_000, H) == 11_000


@given(st.floats(0, 1e5), st.floats(1, 1e5), st.floats(1, 1e5))
def test_departure_floor_delivers_the_need_when_feasible(
    need: float, left: float, pmax: float
) -> None:
    floor = departure_floor_w(need, left, pmax, H)
    assert 0.0 <= floor <= pmax
    h = min(H, left)
    delivered_j = floor * h + pmax * (left - h)
    if 3600 * need <= pmax * left:
        # relative tolerance for rounding, plus 1 µJ absolute: a subnormal need (5e-324 Wh)
        # loses relative precision in any float arithmetic
        assert delivered_j >= 3600 * need * (1 - 1e-9) - 1e-6


def test_ev_unit_ac_gap_and_plain_charging_cannot_rise() -> None:
    u = ev_unit(
        ("cs", 1),
        7000.0,
        AC,
        SessionInfo(T0.timestamp() + 2 * 3600, 19_745),
        None,
        T0.timestamp(),
        H,
    )
    assert u.gap_w == GAP
    assert u.floor_w == GAP  # a ~1.7 kW need becomes the 6 A minimum, not a fraction
    assert u.hi_w == 7000.0 and u.lo_w == 0.0


def test_ev_unit_v2g_discharge_bounded_by_reserve_need_and_budget() -> None:
    spec = EvseSpec(max_w=11_000, ac=False, max_discharge_w=10_000)
    now = 0.0
    session = SessionInfo(departure_ts=4 * 3600, energy_need_wh=5_000, battery_wh=60_000, v2g=True)
    # reserve: 60 kWh·(50−30)% = 12 kWh over 900 s → 48 kW; EVSE: 10 kW → 10 kW
    u = ev_unit(("v", 1), 5000.0, spec, session, 50.0, now, H)
    assert (u.floor_w, u.lo_w, u.hi_w, u.gap_w) == (-10_000, -10_000, 11_000, 0.0)
    # budget 1 kWh → 3600·1000/900 = 4 kW
    assert ev_unit(("v", 1), 5000.0, spec, session, 50.0, now, H, budget_wh=1000).floor_w == -4000
    # at 31 % SoC only 0.6 kWh above reserve → 2.4 kW
    assert ev_unit(("v", 1), 0.0, spec, session, 31.0, now, H).floor_w == pytest.approx(-2400)
    no_consent = SessionInfo(4 * 3600, 5_000, 60_000, v2g=False)
    assert ev_unit(("v", 1), 5000.0, spec, no_consent, 50.0, now, H).floor_w == 0.0


def test_units_from_fleet_filters_and_bess() -> None:
    fleet = fleet_of(
        ("a", 1, 7000.0, True), ("a", 2, 0.0, False), ("b", 1, -3000.0, False), soc_pct=50
    )
    fleet.stations["c"] = fleet_of(("c", 1, 5000.0, True), connected=False).stations["c"]
    fleet.stations["d"] = fleet_of(("d", 1, 5000.0, True), status=EvseStatus.FAULTED).stations["d"]
    fleet.stations["e"] = fleet_of(("e", 1, 5000.0, True)).stations["e"]
    specs = {("b", 1): EvseSpec(bess=BessSpec(100_000, 50_000, 50_000))}
    sessions = {("e", 1): SessionInfo(opt_out=True)}
    units = units_from_fleet(fleet, {("a", 1): 6500.0}, specs, sessions, T0.timestamp())
    by_key = {(u.station_id, u.evse_id): u for u in units}
    assert set(by_key) == {("a", 1), ("b", 1)}  # no tx, offline, faulted, opted out: excluded
    assert by_key[("a", 1)].baseline_w == 6500.0
    bess = by_key[("b", 1)]
    assert bess.stationary and bess.baseline_w == -3000.0
    # 100 kWh: 40 % above SoC_min → 160 kW over 15 min, capped at 50 kW either way
    assert (bess.floor_w, bess.hi_w, bess.gap_w) == (-50_000, 50_000, 0.0)


def test_capture_baseline_marks_stale_and_missing() -> None:
    fleet = fleet_of(("a", 1, 7000.0, True), ("a", 2, None, False), ("b", 1, 3000.0, True))
    fleet.stations["b"].evses[1].power_measured_at = T0 - timedelta(minutes=5)
    base = capture_baseline(fleet, T0 + timedelta(seconds=10))
    assert base.power_w == {("a", 1): 7000.0, ("a", 2): 0.0, ("b", 1): 3000.0}
    assert base.total_w == 10_000.0
    assert base.stale == {("a", 2), ("b", 1)}


def test_needs_stated_by_the_ev_shape_the_unit() -> None:
    """Departure and energy need → a departure floor; the EV's own limit caps the EVSE."""
    fleet = fleet_of(("S", 1, 7_000.0, True))
    evse = fleet.stations["S"].evses[1]
    evse.energy_wh = 1_000.0
    # 30 min left, 3 kWh still wanted, at most 7.4 kW: the floor must keep the need
    evse.needs = ChargingNeeds(
        T0, "ev", T0 + timedelta(minutes=30), 4_000.0, 0.0, ev_max_power_w=7_400.0
    )
    (unit,) = units_from_fleet(fleet, {}, {}, {}, T0.timestamp(), horizon_s=900.0)
    info = session_from_needs(evse.needs, evse.energy_wh)
    assert info.energy_need_wh == 3_000.0  # 4 kWh stated, 1 kWh delivered since
    expected = departure_floor_w(3_000.0, 1_800.0, 7_400.0, 900.0)
    assert expected > 0 and unit.floor_w == max(expected, unit.gap_w)
    # an opted-out driver's EVSE is no unit at all
    evse.needs = ChargingNeeds(T0, "api", opt_out=True)
    assert units_from_fleet(fleet, {}, {}, {}, T0.timestamp()) == []


def test_model_specs_apply_by_vendor_and_model() -> None:
    fleet = fleet_of(("S", 1, 2_000.0, True))
    fleet.stations["S"].vendor, fleet.stations["S"].model = "Acme", "Solo"
    one_phase = EvseSpec(max_w=3_680.0, phases=1)
    (unit,) = units_from_fleet(
        fleet, {}, {}, {}, T0.timestamp(), model_specs={("Acme", "Solo"): one_phase}
    )
    assert unit.gap_w == 6.0 * 230.0  # 1 phase: the 6 A minimum is 1.38 kW
