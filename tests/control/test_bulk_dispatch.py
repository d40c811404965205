"""The engine's bulk dispatch against the command-by-command one it replaces.

`Engine._dispatch_bulk` hands a step's orders over from lists built at re-plan time
and records limits, expiries and baselines in bulk; `ListEngine` turns every
evaluation into a command list first, which takes the one-by-one path. Both must
send the same frames and end in the same state, answer by answer.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from evflex.control.allocation import Command as LimitCommand
from evflex.control.allocation import Commands, command_list
from evflex.control.loop import Engine, Fcr
from tests.control.engine_helpers import Clocks, FakePort, engine_for, feed


class ListEngine(Engine):
    def _dispatch(
        self, cmds: Commands | list[LimitCommand], reason: str, tags: tuple[str, ...]
    ) -> int:
        if isinstance(cmds, Commands):
            cmds = command_list(cmds)
        return super()._dispatch(cmds, reason, tags)


def _sent(port: FakePort) -> list[tuple[str, object]]:
    return [(sid, cmd) for sid, cmd, _ in port.sent]


def _state(engine: Engine) -> tuple[object, ...]:
    audit = [(a.station_id, a.evse_id, a.action, a.limit_w, a.outcome) for a in engine.audit]
    released = {k for k in engine.released_at if k not in engine.limits}
    return (
        engine.limits,
        set(engine.expires),
        engine.unit_base,
        {k: (e.limit_w, e.from_w) for k, e in engine.expect.items()},
        released,
        engine.variant,
        audit,
    )


Step = tuple[float, bool, int]  # (frequency, tick after it, a transaction to end first)


async def _run(cls: type[Engine], steps: list[Step], amps_only: set[int]) -> tuple[object, ...]:
    port, clocks = FakePort(), Clocks()
    port.release.set()
    port.refuse = {f"S{i}": {"W"} for i in amps_only}
    plain = engine_for(24, port, clocks, tx_every=3)
    engine = cls(plain.port, plain.fleet, plain.config, wall=plain.wall, mono=plain.mono)
    engine.activate("fcr", Fcr(8 * 7_000.0))
    frames: list[tuple[object, ...]] = []
    for hz, tick, ended in steps:
        evse = engine.fleet.stations[f"S{ended * 3 % 24}"].evses[1]
        if ended >= 0:
            evse.transaction = None  # ends between the plan and the step (no event)
        feed(engine, clocks, hz, 1)
        await engine.drain()
        if tick:
            clocks.advance(1.0)
            engine.tick()
            await engine.drain()
        frames.append((_sent(port), _state(engine)))
    return tuple(frames)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([50.0, 49.98, 49.95, 49.9, 49.85, 49.8, 49.7]),
            st.booleans(),
            st.one_of(st.just(-1), st.integers(0, 7)),
        ),
        min_size=1,
        max_size=8,
    ),
    st.sets(st.integers(0, 23), max_size=4),
)
def test_bulk_dispatch_sends_and_records_what_one_by_one_does(
    steps: list[Step], amps_only: set[int]
) -> None:
    bulk = asyncio.run(_run(Engine, steps, amps_only))
    one_by_one = asyncio.run(_run(ListEngine, steps, amps_only))
    for i, (got, want) in enumerate(zip(bulk, one_by_one, strict=True)):
        assert got == want, f"after step {i}"
