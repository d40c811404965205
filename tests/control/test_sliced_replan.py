"""The periodic re-plan runs in slices across event-loop turns (`Engine._replan_sliced`).

The loop is driven deterministically: the engine's re-plan task is awaited, or the
loop is stepped with `asyncio.sleep(0)` (one turn: a yield, no waiting on time).
"""

from __future__ import annotations

import asyncio

import pytest

from evflex.control.allocation import Plan, command_list, minimal, moves
from evflex.control.loop import Engine, Fcr
from evflex.control.units import EvseSpec
from evflex.fleet.commands import SetChargingProfile
from tests.control.engine_helpers import Clocks, FakePort, engine_for, feed
from tests.control.fleet_helpers import set_power

N = 40  # stations of one 7 kW EVSE each
SLICE = 8  # EVSEs per collection turn: 5 collection turns


def _sliced(port: FakePort, clocks: Clocks, slice_evses: int = SLICE) -> Engine:
    engine = engine_for(N, port, clocks, replan_slice_evses=slice_evses)
    engine.activate("fcr", Fcr(21_000.0))
    return engine


def _meters_move(engine: Engine, power_w: float | None = None) -> None:
    """Every (uncontrolled) unit reports a new power: its unit must be rebuilt."""
    for i in range(N):
        set_power(engine.fleet, f"S{i}", 1, power_w if power_w is not None else 3_000.0 + 97 * i)


def _due_tick(engine: Engine, clocks: Clocks) -> asyncio.Task[None]:
    clocks.advance(engine.config.replan_interval_s)
    engine.tick()
    task = engine.replanning
    assert task is not None  # a periodic re-plan: started, not done in this turn
    return task


def _plan_value(plan: Plan | None) -> object:
    assert plan is not None
    passes = [
        None if p is None else (p.unit_ix, p.target_w, p.amount_w, p.keys, p.at)
        for p in (plan.lower, plan.raise_)
    ]
    return (list(plan.units), plan.down, plan.up, passes)


def _sets(port: FakePort) -> list[tuple[str, float]]:
    return [
        (sid, cmd.profile.periods[0].limit)
        for sid, cmd, _ in port.sent
        if isinstance(cmd, SetChargingProfile)
    ]


async def test_a_sliced_replan_installs_the_plan_a_synchronous_one_builds() -> None:
    port_a, clocks_a, port_b, clocks_b = FakePort(), Clocks(), FakePort(), Clocks()
    sliced = _sliced(port_a, clocks_a)
    synchronous = _sliced(port_b, clocks_b, slice_evses=0)
    for engine in (sliced, synchronous):
        _meters_move(engine)
    version = sliced._plan_version
    task = _due_tick(sliced, clocks_a)
    assert sliced._plan_version == version  # nothing installed in the tick's turn
    clocks_b.advance(synchronous.config.replan_interval_s)
    synchronous.tick()
    assert synchronous.replanning is None
    await task
    assert sliced.replanning is None and sliced._plan_version == version + 1
    assert _plan_value(sliced.plan) == _plan_value(synchronous.plan)
    # and the same limits for the same step
    feed(sliced, clocks_a, 49.8)
    feed(synchronous, clocks_b, 49.8)
    assert _sets(port_a) and _sets(port_a) == _sets(port_b)


async def test_an_unchanged_fleet_keeps_its_plan_after_a_sliced_replan() -> None:
    port, clocks = FakePort(), Clocks()
    engine = _sliced(port, clocks)
    plan, version = engine.plan, engine._plan_version
    await _due_tick(engine, clocks)
    assert engine.plan is plan and engine._plan_version == version


async def _slice_in_flight(turns: int) -> tuple[Engine, asyncio.Task[None]]:
    """An engine whose periodic re-plan (all meters moved) has run `turns` loop turns."""
    port, clocks = FakePort(), Clocks()
    engine = _sliced(port, clocks)
    _meters_move(engine)
    task = _due_tick(engine, clocks)
    for _ in range(turns):
        await asyncio.sleep(0)  # one loop turn
    return engine, task


@pytest.mark.parametrize("turns", range(1, 10))  # every stage: collection, prepare, install
async def test_a_synchronous_replan_supersedes_a_sliced_one_in_flight(turns: int) -> None:
    engine, task = await _slice_in_flight(turns)
    assert not task.done()  # the slice is still in flight
    engine.set_spec(("S0", 1), EvseSpec(max_w=3_680.0, phases=1))  # a fleet change
    engine.tick()  # → a synchronous re-plan, now
    plan, version = engine.plan, engine._plan_version
    assert engine.replanning is None
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.plan is plan and engine._plan_version == version  # nothing installed


@pytest.mark.parametrize("turns", range(1, 10))
async def test_deactivation_cancels_a_sliced_replan_in_flight(turns: int) -> None:
    engine, task = await _slice_in_flight(turns)
    assert not task.done()
    (service,) = engine.active_services()
    engine.deactivate(service.id)
    assert engine.plan is None and engine.replanning is None
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.plan is None


async def test_samples_are_evaluated_with_the_old_plan_until_the_new_one_is_installed() -> None:
    port, clocks = FakePort(), Clocks()
    engine = _sliced(port, clocks)
    old = engine.plan
    assert old is not None
    _meters_move(engine, 3_500.0)  # every car halves its power
    task = _due_tick(engine, clocks)
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # two turns: the units are being collected
    feed(engine, clocks, 49.8)  # full activation: −21 kW
    assert engine.plan is old
    # the old plan's allocation: three of its 7 kW units paused
    expected = command_list(minimal(old, moves(old, -21_000.0), {}, engine.config.threshold_w))
    assert _sets(port) == [(sid, 0.0) for sid, _, _ in expected]
    assert len(expected) == 3
    await task
    new = engine.plan
    assert new is not old and new is not None
    assert all(u.baseline_w == 3_500.0 for u in new.units)
    feed(engine, clocks, 49.8)  # the new plan: 3.5 kW units, three more paused
    assert engine._evaluated is not None and engine._evaluated[0] == engine._plan_version
    assert sum(1 for _, limit in _sets(port) if limit == 0.0) == 6
