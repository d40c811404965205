"""The engine's closed loop: accepted is not delivered.

Issue 5, point 5: "Units that accepted but did not move within their model's
expected delay are marked non-responding and compensated by others; rejected
profiles trigger fallbacks (another purpose, amps instead of watts); both are
reported per hardware model in the readiness data."
"""

from __future__ import annotations

from evflex.control.loop import Fcr
from evflex.control.response import ResponseParams, model_key
from evflex.fleet.commands import ClearChargingProfile, SetChargingProfile
from tests.control.engine_helpers import Clocks, FakePort, engine_for, feed
from tests.control.fleet_helpers import set_power

RESPONSE = ResponseParams(default_delay_s=5.0)


def _limits_sent(port: FakePort, station_id: str) -> list[SetChargingProfile]:
    return [c for sid, c, _ in port.sent if sid == station_id and isinstance(c, SetChargingProfile)]


async def test_a_unit_that_accepts_but_ignores_is_marked_and_compensated() -> None:
    port, clocks = FakePort(), Clocks()
    port.release.set()
    engine = engine_for(4, port, clocks, response=RESPONSE)
    engine.activate("fcr", Fcr(7_000.0))  # full activation pauses exactly one 7 kW unit
    feed(engine, clocks, 49.8)
    await engine.drain()
    (first,) = engine.limits
    port.ignore.add(first[0])
    set_power(engine.fleet, first[0], 1, 7_000.0)  # it "accepted" but still draws 7 kW
    port.natural.pop(first, None)
    clocks.advance(RESPONSE.default_delay_s - 1.0)
    feed(engine, clocks, 49.8, 1)
    engine.tick()
    await engine.drain()
    assert first not in engine.non_responding  # not due yet
    clocks.advance(1.5)
    feed(engine, clocks, 49.8, 1)
    engine.tick()
    await engine.drain()
    assert first in engine.non_responding
    # released (its limit is not counted on) and another unit paused in its place
    assert any(isinstance(c, ClearChargingProfile) for sid, c, _ in port.sent if sid == first[0])
    assert first not in engine.limits and len(engine.limits) == 1
    (other,) = engine.limits
    assert other != first and engine.fleet.stations[other[0]].evses[1].power_w == 0.0
    # measured power now meets the target: the fleet gave 7 kW despite the ignorer
    state = engine.state()
    assert state.target_w is not None
    assert abs(state.measured_w - state.target_w) < 1.0
    # reported per hardware model and per station
    clocks.advance(1.0)
    engine.tick()
    await engine.drain()
    stats = engine.models[model_key(None, None, None)]
    assert stats.non_responding == 1 and stats.moved >= 1
    assert engine.control_reasons(first[0]) == ["control:non_responding:EVSE.1"]
    assert any(a.action == "non_responding" and a.station_id == first[0] for a in engine.audit)


async def test_a_unit_that_moves_in_time_is_not_marked_and_its_delay_is_learned() -> None:
    port, clocks = FakePort(), Clocks()
    port.release.set()
    engine = engine_for(3, port, clocks, response=RESPONSE)
    engine.activate("fcr", Fcr(14_000.0))
    feed(engine, clocks, 49.8)
    await engine.drain()
    assert len(engine.expect) == 2
    clocks.advance(1.0)
    engine.tick()
    await engine.drain()
    assert engine.expect == {} and engine.non_responding == {}
    stats = engine.models[model_key(None, None, None)]
    assert stats.moved == 2 and len(stats.delays_s) == 2


async def test_a_refused_watt_limit_falls_back_to_amps() -> None:
    port, clocks = FakePort(), Clocks()
    port.release.set()
    engine = engine_for(1, port, clocks, response=RESPONSE)
    port.refuse["S0"] = {"W"}
    engine.activate("fcr", Fcr(3_000.0))
    feed(engine, clocks, 49.8)
    await engine.drain()
    sent = _limits_sent(port, "S0")
    assert [c.profile.unit for c in sent] == ["W", "A"]
    watts, amps = sent[0].profile.periods[0].limit, sent[1].profile.periods[0].limit
    assert amps == round(watts / (230.0 * 3), 1)  # default EVSE: 3 phases at 230 V
    assert sent[1].profile.purpose == "tx"
    assert engine.limits == {("S0", 1): watts}
    assert engine.models[model_key(None, None, None)].fallbacks == {"A/natural": 1}
    assert engine.control_reasons("S0") == ["control:fallback:A/natural"]
    # the next limit goes straight to the form the station takes
    feed(engine, clocks, 49.9)
    await engine.drain()
    assert _limits_sent(port, "S0")[-1].profile.unit == "A"


async def test_refusing_every_form_marks_the_unit_and_others_take_over() -> None:
    port, clocks = FakePort(), Clocks()
    port.release.set()
    engine = engine_for(3, port, clocks, response=RESPONSE)
    engine.activate("fcr", Fcr(7_000.0))
    feed(engine, clocks, 49.8)
    (first,) = engine.limits
    port.refuse[first[0]] = {"W", "A"}
    await engine.drain()
    tried = [(c.profile.unit, c.profile.purpose) for c in _limits_sent(port, first[0])]
    assert tried == [("W", "tx"), ("A", "tx"), ("W", "tx_default"), ("A", "tx_default")]
    assert first in engine.non_responding
    engine.tick()
    await engine.drain()
    assert len(engine.limits) == 1 and first not in engine.limits
    assert engine.models[model_key(None, None, None)].rejected == 4


async def test_uncontrolled_cars_move_the_baseline_not_the_delivery() -> None:
    """measured − baseline is what evflex's limits do; a car arriving is not delivery."""
    port, clocks = FakePort(), Clocks()
    port.release.set()
    engine = engine_for(3, port, clocks, response=RESPONSE)
    engine.activate("fcr", Fcr(7_000.0))
    feed(engine, clocks, 49.8)
    await engine.drain()
    before = engine.state()
    assert before.baseline_w is not None and before.target_w is not None
    assert before.measured_w - before.baseline_w == -7_000.0
    (limited,) = engine.limits
    free = next(k for k in [("S0", 1), ("S1", 1), ("S2", 1)] if k != limited)
    set_power(engine.fleet, free[0], free[1], 3_000.0)  # an uncontrolled car tapers
    after = engine.state()
    assert after.baseline_w is not None
    assert after.measured_w - after.baseline_w == -7_000.0
    assert after.baseline_w == before.baseline_w - 4_000.0
