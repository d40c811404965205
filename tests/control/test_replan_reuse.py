"""A re-plan that reuses the previous one's units (`UnitMemo`) and plan equals one
built from scratch, whatever changed in between."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from evflex.control.allocation import Pass, Plan, allocate, prepare
from evflex.control.loop import Engine, EngineConfig, _PassOrders
from evflex.control.units import (
    BessSpec,
    EvseSpec,
    Key,
    SessionInfo,
    Unit,
    UnitMemo,
    units_from_fleet,
)
from evflex.fleet.model import ChargingNeeds, Evse, EvseStatus, Transaction
from evflex.fleet.state import FleetState

from .engine_helpers import FakePort
from .fleet_helpers import T0, fleet_of
from .test_allocation import fleet_st

KEYS: list[Key] = [(f"S{i // 2}", 1 + i % 2) for i in range(8)]  # 4 stations × 2 EVSEs
STATIONS = sorted({sid for sid, _ in KEYS})

powers = st.sampled_from([0.0, 1_500.0, 4_140.0, 7_400.0, 11_040.0, -3_000.0]) | st.floats(
    -20_000, 20_000
)
specs = st.sampled_from(
    [
        EvseSpec(),
        EvseSpec(max_w=3_680.0, phases=1),
        EvseSpec(max_w=50_000.0, ac=False, max_discharge_w=20_000.0),
        EvseSpec(bess=BessSpec(100_000, 50_000, 50_000)),
    ]
)
needs = st.builds(
    lambda dep_s, energy, reg, ev_max, battery, v2g, opt_out: ChargingNeeds(
        T0,
        "ev",
        None if dep_s is None else T0 + timedelta(seconds=dep_s),
        energy,
        reg,
        ev_max,
        battery,
        v2g,
        opt_out,
    ),
    st.none() | st.integers(-600, 6 * 3600),
    st.none() | st.floats(0, 60_000),
    st.none() | st.floats(0, 10_000),
    st.none() | st.sampled_from([3_000.0, 7_400.0, 22_000.0]),
    st.none() | st.just(60_000.0),
    st.booleans(),
    st.booleans(),
)
sessions = st.builds(
    SessionInfo,
    st.none() | st.floats(T0.timestamp() - 600, T0.timestamp() + 6 * 3600),
    st.none() | st.floats(0, 60_000),
    st.none() | st.just(60_000.0),
    st.just(30.0),
    st.booleans(),
    st.booleans(),
)
ix = st.integers(0, len(KEYS) - 1)
changes = st.one_of(
    st.tuples(st.just("power"), ix, st.none() | powers),
    st.tuples(st.just("energy"), ix, st.none() | st.floats(0, 40_000)),
    st.tuples(st.just("soc"), ix, st.none() | st.floats(0, 100)),
    st.tuples(st.just("status"), ix, st.sampled_from(list(EvseStatus))),
    st.tuples(st.just("tx"), ix, st.none() | st.sampled_from(["t1", "t2"])),
    st.tuples(st.just("needs"), ix, st.none() | needs),
    st.tuples(st.just("base"), ix, st.none() | powers),
    st.tuples(st.just("spec"), ix, st.none() | specs),
    st.tuples(st.just("session"), ix, st.none() | sessions),
    st.tuples(st.just("connected"), st.sampled_from(STATIONS), st.booleans()),
    st.tuples(st.just("hardware"), st.sampled_from(STATIONS), st.sampled_from(["A", "B"])),
    st.tuples(st.just("time"), st.sampled_from([0.0, 0.5, 1.0, 5.0, 900.0])),
    st.tuples(st.just("new_evse"), ix),
    st.tuples(st.just("nothing")),
)
MODEL_SPECS = {("Acme", "A"): EvseSpec(max_w=7_360.0, phases=1, voltage_v=230.0)}


class World:
    """A small fleet and the inputs `units_from_fleet` takes besides it."""

    def __init__(self) -> None:
        self.fleet: FleetState = fleet_of(*((sid, eid, 7_400.0, True) for sid, eid in KEYS))
        self.base: dict[Key, float] = {}
        self.specs: dict[Key, EvseSpec] = {}
        self.sessions: dict[Key, SessionInfo] = {}
        self.now = T0.timestamp()
        for sid in STATIONS:
            self.fleet.stations[sid].vendor = "Acme"
        # a variety from the start: a battery and a V2G car (both depend on the SoC),
        # a departure with a need (depends on the clock and the energy register)
        self.specs[KEYS[6]] = EvseSpec(bess=BessSpec(100_000, 50_000, 50_000))
        self.specs[KEYS[7]] = EvseSpec(max_w=50_000.0, ac=False, max_discharge_w=20_000.0)
        self.evse(6).soc_pct = self.evse(7).soc_pct = 60.0
        self.evse(7).needs = ChargingNeeds(
            T0, "ev", T0 + timedelta(hours=5), 20_000.0, 0.0, battery_wh=60_000.0, v2g=True
        )
        # (10 kWh in 1 h: a floor of ~6.9 kW, below its 7.4 kW, rising as time passes)
        self.evse(5).needs = ChargingNeeds(T0, "ev", T0 + timedelta(hours=1), 10_000.0, 0.0)
        self.evse(5).energy_wh = 0.0

    def evse(self, i: int) -> Evse:
        sid, eid = KEYS[i]
        return self.fleet.stations[sid].evses[eid]

    def apply(self, change: tuple[Any, ...]) -> None:
        what, *args = change
        if what == "power":
            self.evse(args[0]).power_w = args[1]
        elif what == "energy":
            self.evse(args[0]).energy_wh = args[1]
        elif what == "soc":
            self.evse(args[0]).soc_pct = args[1]
        elif what == "status":
            self.evse(args[0]).status = args[1]
        elif what == "tx":
            eid = KEYS[args[0]][1]
            tx = Transaction(args[1], eid, T0) if args[1] is not None else None
            self.evse(args[0]).transaction = tx
        elif what == "needs":
            self.evse(args[0]).needs = args[1]
        elif what in ("base", "spec", "session"):
            tables: dict[str, dict[Key, Any]] = {
                "base": self.base,
                "spec": self.specs,
                "session": self.sessions,
            }
            table = tables[what]
            if args[1] is None:
                table.pop(KEYS[args[0]], None)
            else:
                table[KEYS[args[0]]] = args[1]
        elif what == "connected":
            self.fleet.stations[args[0]].connected = args[1]
        elif what == "hardware":
            self.fleet.stations[args[0]].model = args[1]
        elif what == "time":
            self.now += args[0]
        elif what == "new_evse":  # an equal EVSE, but another object
            sid, eid = KEYS[args[0]]
            self.fleet.stations[sid].evses[eid] = replace(self.evse(args[0]))

    def units(self, memo: UnitMemo | None = None) -> list[Unit]:
        return units_from_fleet(
            self.fleet,
            self.base,
            self.specs,
            self.sessions,
            self.now,
            model_specs=MODEL_SPECS,
            memo=memo,
        )


def _same_units(got: list[Unit], want: list[Unit]) -> None:
    assert got == want
    # the EVSE is not part of a unit's value, but the engine reaches it through it
    assert [u.evse for u in got] == [u.evse for u in want]
    assert all(a.evse is b.evse for a, b in zip(got, want, strict=True))


def _pass_view(p: Pass | None) -> tuple[Any, ...] | None:
    if p is None:
        return None
    return (p.unit_ix, p.target_w, p.amount_w, p.total_w, p.at, p.keys, p.scale_w)


def _same_plan(got: Plan, want: Plan) -> None:
    _same_units(list(got.units), list(want.units))
    assert (got.down, got.up) == (want.down, want.up)
    assert _pass_view(got.lower) == _pass_view(want.lower)
    assert _pass_view(got.raise_) == _pass_view(want.raise_)
    for delta_w in (-1e9, -12_000.0, -2_000.0, 0.0, 2_000.0, 1e9):
        assert allocate(got, delta_w) == allocate(want, delta_w)


@settings(max_examples=300, deadline=None)
@given(st.lists(changes, max_size=25))
def test_units_with_a_memo_equal_units_from_scratch(steps: list[tuple[Any, ...]]) -> None:
    world = World()
    memo = UnitMemo()
    _same_units(world.units(memo), world.units())
    for change in steps:
        world.apply(change)
        _same_units(world.units(memo), world.units())


def test_unchanged_inputs_give_the_same_unit_objects() -> None:
    """What lets the engine keep its plan: nothing changed → the very same units."""
    world = World()
    memo = UnitMemo()
    first = world.units(memo)
    again = world.units(memo)
    assert len(again) == len(KEYS) and all(a is b for a, b in zip(again, first, strict=True))
    world.apply(("power", 3, 1_000.0))
    changed = world.units(memo)
    assert [a is b for a, b in zip(changed, first, strict=True)] == [i != 3 for i in range(8)]
    # a departure makes a unit depend on the clock: rebuilt when the time moved
    # (5 and 7 have one from the start)
    world.apply(("session", 2, SessionInfo(T0.timestamp() + 3600, 20_000.0)))
    timed = world.units(memo)
    world.apply(("time", 1.0))
    later = world.units(memo)
    assert [a is b for a, b in zip(later, timed, strict=True)] == [
        i not in (2, 5, 7) for i in range(8)
    ]
    assert later[2] != timed[2]  # its laxity shrank by the second


def _engine(world: World) -> Engine:
    engine = Engine(
        FakePort(),
        world.fleet,
        EngineConfig(),
        specs=world.specs,
        sessions=world.sessions,
        model_specs=MODEL_SPECS,
        wall=lambda: T0 + timedelta(seconds=world.now - T0.timestamp()),
        mono=lambda: world.now,
    )
    # the closed loop's baselines and the specs, changed by the test as it goes
    engine.unit_base, engine.specs = world.base, world.specs
    return engine


def _orders_view(built: _PassOrders) -> tuple[Any, ...]:
    return (built.orders, built.variants, built.txs, built.limits, built.evses)


engine_changes = changes | st.tuples(st.just("variant"), ix, st.integers(0, 3))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(engine_changes, min_size=1, max_size=3), max_size=12), st.sets(ix))
def test_engine_replan_equals_a_plan_from_scratch(
    steps: list[list[tuple[Any, ...]]], silent: set[int]
) -> None:
    """`Engine._replan` keeps its plan when no unit changed, else builds a new one:
    either way the plan equals `prepare` of units built from scratch, and the orders
    of its passes (taken over from the plan before or not) the ones built afresh."""
    world = World()
    engine = _engine(world)
    engine._replan()
    for batch in steps:  # what changed between two re-plans
        for change in batch:
            if change[0] == "variant":  # a station took another form of limit
                engine.variant[KEYS[change[1]]] = change[2]
                engine._variant_changes.append(KEYS[change[1]])
            else:
                world.apply(change)
            if change[0] == "spec" and change[2] is not None:
                engine.set_spec(KEYS[change[1]], change[2])
        timed = any(change[0] == "time" for change in batch)
        engine.non_responding = {KEYS[i]: world.now + 60.0 for i in silent if timed}
        before, version = engine.plan, engine._plan_version
        engine._replan()
        want = prepare(
            [u for u in world.units() if (u.station_id, u.evse_id) not in engine.non_responding]
        )
        assert engine.plan is not None
        _same_plan(engine.plan, want)
        if engine.plan is before:  # kept: no new version, so no needless re-evaluation
            assert engine._plan_version == version
        else:
            assert engine._plan_version == version + 1
        for first in (engine.plan.lower, engine.plan.raise_):
            assert first is not None
            built = engine._orders_of(first)
            n = len(first.keys)
            built.refresh(range(n), engine)  # (as a step does before the hand-over)
            fresh = _PassOrders.build(first, engine)
            # (transactions compare by value: what an order is built from)
            assert _orders_view(built) == _orders_view(fresh)


def test_engine_keeps_its_plan_and_orders_when_nothing_changed() -> None:
    world = World()
    engine = _engine(world)
    engine._replan()
    plan, version = engine.plan, engine._plan_version
    assert plan is not None and plan.lower is not None
    orders = engine._orders_of(plan.lower)
    engine._replan()
    assert engine.plan is plan and engine._plan_version == version
    assert engine._orders_of(plan.lower) is orders
    world.apply(("base", 0, 5_000.0))
    engine._replan()
    assert engine.plan is not plan and engine._plan_version == version + 1


@settings(max_examples=300, deadline=None)
@given(
    fleet_st(),
    st.lists(st.tuples(st.integers(0, 24), st.integers(0, 24)), max_size=6),
    st.integers(0, 2),
    st.integers(0, 2),
    st.booleans(),
)
def test_prepare_from_a_previous_plan_equals_prepare_from_scratch(
    units: list[Unit], swaps: list[tuple[int, int]], epoch: int, new_epoch: int, grow: bool
) -> None:
    """Units replaced by others (laxity moved to another bucket or not, other powers),
    removed or added, another epoch: the order taken over or sorted again, the plan
    is `prepare`'s from scratch."""
    previous = prepare(units, epoch)
    later = list(units)
    for a, b in swaps:  # unit a takes b's numbers (maybe its laxity bucket too)
        a, b = a % len(later), b % len(later)
        later[a] = replace(later[b], station_id=later[a].station_id, seed=later[a].seed)
    if grow:
        later.append(replace(units[0], station_id="new"))
    want = prepare(later, new_epoch)
    got = prepare(later, new_epoch, previous=previous)
    _same_plan(got, want)
    assert got.sort_keys == want.sort_keys
    if not swaps and not grow and epoch == new_epoch:  # nothing changed: same order
        assert got.down is previous.down
