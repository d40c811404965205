"""What a station draws under a limit: AC 6 A rule, DC, V2G discharge, BESS protection."""

from __future__ import annotations

import dataclasses

import pytest

from evflex.sim.catalogue import CLASSES
from evflex.sim.ev import Ev
from evflex.sim.physics import Battery, ac_power, dc_power

AC22 = CLASSES["ac16"][2][1]  # 3-phase 32 A
V2G = CLASSES["v2g201"][0][1]


def ev(**kw: float) -> Ev:
    base = Ev("EV1", 60_000.0, 0.5, 1.0, 11_000.0, 3, 0.0, 0.95, 0.0, 1e9, 30_000.0, False)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_ac_follows_the_car_when_unlimited() -> None:
    assert ac_power(AC22, ev(), None, None) == 11_000.0


def test_ac_limit_in_watts_becomes_a_current() -> None:
    assert ac_power(AC22, ev(), 6_900.0, None) == pytest.approx(6_900.0)


def test_ac_pauses_below_six_amps() -> None:
    """IEC 61851-1: the minimum signalled current is 6 A; below it the EVSE suspends."""
    six_amps = 6 * 230 * 3
    assert ac_power(AC22, ev(), six_amps, None) == pytest.approx(six_amps)
    assert ac_power(AC22, ev(), six_amps - 1, None) == 0.0


def test_ac_phase_switching_to_one_phase() -> None:
    assert ac_power(AC22, ev(), 3_000.0, 1) == pytest.approx(3_000.0)


def test_dc_charges_and_v2g_discharges_on_negative_limit() -> None:
    car = ev(max_charge_w=50_000.0, max_discharge_w=11_000.0, phases=1)
    assert dc_power(V2G, car, None) == pytest.approx(min(V2G.max_power_w, 50_000.0))
    assert dc_power(V2G, car, -5_000.0) == -5_000.0
    assert dc_power(V2G, car, -50_000.0) == -min(V2G.max_discharge_w, 11_000.0)


def test_v2g_keeps_the_drivers_reserve() -> None:
    car = ev(max_discharge_w=11_000.0, soc=0.3, min_soc=0.3)
    assert dc_power(V2G, car, -5_000.0) == 0.0


def test_bess_protection_refuses_and_clips() -> None:
    """Datasheet: "All external commands are validated against local protection thresholds
    (over-voltage, under-voltage, temperature)"."""
    b = Battery(200_000.0, 100_000.0, soc=0.96)
    assert b.refusal(charging=True) is not None and b.refusal(charging=False) is None
    assert b.clip(150_000.0, charging=False) == 100_000.0
    b.soc = 0.04
    assert b.clip(10_000.0, charging=False) == 0.0
    b.soc, b.temp_c = 0.5, 42.5
    assert b.clip(100_000.0, charging=True) == pytest.approx(50_000.0)


def test_bess_heats_under_load_and_tracks_soc() -> None:
    b = Battery(200_000.0, 100_000.0, soc=0.5)
    for _ in range(600):
        b.step(100_000.0, 1.0)
    assert b.temp_c > 30.0 and b.soc > 0.5
    assert b.voltage > b.nominal_v


async def test_amp_limit_follows_the_phases_in_use() -> None:
    """OCPP amp limits are per phase: 6 A for a single-phase car on a three-phase
    charger is 1,380 W, not the 4,140 W a three-phase conversion would allow."""
    import asyncio

    from evflex.sim.clock import Clock
    from evflex.sim.faults import DelayModel
    from evflex.sim.fleet import FleetConfig, build_station
    from evflex.sim.link import Context
    from evflex.sim.physics import VOLTS_AC
    from evflex.sim.stats import Stats

    ctx = Context(asyncio.get_running_loop(), Clock(), Stats(), DelayModel(), lambda _l, _d: None)
    station = build_station(FleetConfig(stations=1), ctx, 1, "ac201@Home 11 Pro")
    assert station.model.phases == 3
    assert station._ac_to_watts(6.0, True, None) == 6.0 * VOLTS_AC * 3  # no car yet
    car = ev(phases=1, max_charge_w=3_680.0)
    station.evses[0].ev = car
    limit_w = station._ac_to_watts(6.0, True, None)
    assert limit_w == 6.0 * VOLTS_AC
    assert ac_power(station.model, car, limit_w, None) == pytest.approx(6.0 * VOLTS_AC)
