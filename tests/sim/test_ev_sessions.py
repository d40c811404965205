"""Charging curve, vehicles and the session generator."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from evflex.sim.catalogue import CLASSES
from evflex.sim.ev import acceptance_w
from evflex.sim.sessions import DAY_S, PROFILES, SessionConfig, SessionGenerator, SessionMode

AC = CLASSES["ac16"][0][1]
DC = CLASSES["dc201"][0][1]
V2G = CLASSES["v2g201"][0][1]
T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY_S  # midnight UTC


def generator(model: object = AC, seed: int = 1, **kw: object) -> SessionGenerator:
    return SessionGenerator(model, SessionConfig(**kw), random.Random(seed), "00001")  # type: ignore[arg-type]


socs = st.floats(min_value=0.0, max_value=1.0)
powers = st.floats(min_value=0.0, max_value=350_000.0)
knees = st.floats(min_value=0.5, max_value=0.99)


@given(socs, socs, powers, knees)
def test_curve_tapers_monotonically(a: float, b: float, max_w: float, knee: float) -> None:
    low, high = sorted((a, b))
    assert acceptance_w(high, max_w, knee) <= acceptance_w(low, max_w, knee) + 1e-9


@given(socs, powers, knees)
def test_curve_is_bounded_and_full_until_the_knee(soc: float, max_w: float, knee: float) -> None:
    value = acceptance_w(soc, max_w, knee)
    assert 0.0 <= value <= max_w
    if soc <= knee:
        assert value == max_w


@given(powers, knees)
def test_a_full_battery_takes_nothing(max_w: float, knee: float) -> None:
    assert acceptance_w(1.0, max_w, knee) == 0.0


def test_absorb_moves_soc_and_clamps() -> None:
    ev = generator().new_ev(T0)
    ev.soc = 0.5
    ev.absorb(ev.capacity_wh, 3600.0)  # one hour at "capacity" watts: full
    assert ev.soc == 1.0
    ev.absorb(-10 * ev.capacity_wh, 3600.0)
    assert ev.soc == 0.0


def test_same_seed_same_sessions() -> None:
    a, b = generator(seed=7), generator(seed=7)
    arrivals = [a.next_arrival(T0 + i * 3600) for i in range(5)]
    assert arrivals == [b.next_arrival(T0 + i * 3600) for i in range(5)]
    assert generator(seed=8).next_arrival(T0) != arrivals[0]


def test_arrivals_follow_the_daily_profile() -> None:
    """`work` has no arrivals between 16:00 and 05:00 UTC."""
    gen = generator(profile="work")
    hours = set()
    t = T0
    for _ in range(300):
        t = gen.next_arrival(t)
        hours.add(int(t % DAY_S // 3600))
    assert hours <= {h for h, w in enumerate(PROFILES["work"].hourly) if w > 0}
    assert len(hours) > 3


def test_ev_needs_and_opt_out() -> None:
    gen = generator(opt_out_share=1.0)
    ev = gen.new_ev(T0)
    assert ev.opt_out and ev.id_tag.startswith("OPTOUT") and len(ev.id_tag) <= 20
    assert ev.departure > ev.arrival
    assert ev.energy_needed_wh == max(0.0, (ev.target_soc - ev.soc) * ev.capacity_wh)
    assert not generator(opt_out_share=0.0).new_ev(T0).opt_out


def test_dc_and_v2g_vehicles() -> None:
    assert generator(DC).new_ev(T0).max_charge_w > 22_000
    v2g = generator(V2G).new_ev(T0)
    assert v2g.max_discharge_w > 0
    assert v2g.discharge_w() > 0 or v2g.soc <= v2g.min_soc


def test_warm_start_finds_a_plugged_in_car_sometimes() -> None:
    plugged = [generator(seed=s).present_at(T0 + 22 * 3600)[0] for s in range(50)]
    # `home` at 22:00: most cars that arrived in the evening are still there
    assert sum(ev is not None for ev in plugged) > 10


def test_all_mode_ev_charges_for_a_day() -> None:
    gen = generator(mode=SessionMode.ALL)
    ev = gen.charging_now(T0)
    assert ev.departure - T0 >= 12 * 3600 and ev.accept_w() > 0
