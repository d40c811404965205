"""Batched dispatch over real sockets: a step reaches every station in one pass.

Issue 5's latency goal rests on the engine handing a whole step to the gateway in
one `send_limits` call (no task per station). This checks, with evflex and the
simulated fleet on loopback, that such a step still reaches every station, and that
refusals inside a batch still take the fallback path (amps instead of watts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from evflex.fleet.commands import LimitBatch, LimitOrder, LimitOutcome
from tests.grid.rig import STATIONS, feeding, open_rig, start_fcr

# Wallbox 11 takes limits in amps only: it answers Rejected to a W profile
MIX = "ac16@Home 7:1,ac16@Wallbox 11:1,ac201@Home 11 Pro:1"


async def test_a_full_step_reaches_every_station_in_one_batch_and_refusals_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_rig(tmp_path, mix=MIX) as rig:
        engine = rig.server.app.grid
        gateway = rig.server.app.gateway
        batches: list[list[LimitOrder]] = []
        planned: list[int] = []
        send_limits = gateway.send_limits

        def recording(
            orders: Sequence[LimitOrder],
            batch: LimitBatch,
            on_outcomes: Callable[[list[LimitOutcome]], None],
            **kw: Any,
        ) -> Any:
            batches.append(list(orders))
            plan = engine.plan
            planned.append(0 if plan is None else sum(u.baseline_w > 0 for u in plan.units))
            return send_limits(orders, batch, on_outcomes, **kw)

        monkeypatch.setattr(gateway, "send_limits", recording)
        amps_only = {s.station_id for s in rig.fleet.stations if s.model.model == "Wallbox 11"}
        assert amps_only and len(amps_only) < STATIONS, "precondition: a mixed fleet"
        async with feeding(rig.api, 49.8):
            # twice the fleet's power: full activation pauses every charging EVSE
            await start_fcr(rig, 2 * rig.measured_w())
            await rig.until(
                lambda: len({id(p) for p in rig.grid_profiles()}) >= STATIONS,
                10,
                "a grid profile installed at every station",
            )
            await rig.until(lambda: rig.sim_w() == 0.0, 10, "every station paused")
        step, units = batches[0], planned[0]
        # the whole step in one call: one order per unit drawing power in the plan (a
        # station whose power evflex learns of later is commanded by a later evaluation)
        assert len(step) == units and len({o.station_id for o in step}) == units
        assert units >= STATIONS - 2
        assert all(o.limit == 0.0 and o.unit == "W" for o in step)
        watts = {o.station_id for b in batches for o in b if o.unit == "W"}
        amps = {o.station_id for b in batches for o in b if o.limit is not None and o.unit == "A"}
        assert watts == {s.station_id for s in rig.fleet.stations}  # every station reached
        assert amps == amps_only  # and only the refusing ones retried, in amps
        by_station = {s.station_id: s for s in rig.fleet.stations}
        for profile_station, profile in (
            (sid, p) for sid, st in by_station.items() for p in st.profiles.installed
        ):
            assert profile.amps == (profile_station in amps_only)
        audit = [a for a in engine.audit if a.station_id in amps_only]
        assert {(a.action, a.outcome) for a in audit} >= {
            ("set", "Rejected"),
            ("fallback", "Accepted"),
        }
        assert engine.control_reasons(next(iter(amps_only))) == ["control:fallback:A/natural"]
