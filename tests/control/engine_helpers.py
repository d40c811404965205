"""A fake command port, controllable clocks and a small engine for control tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from evflex.control.loop import Engine, EngineConfig
from evflex.fleet.commands import (
    ClearChargingProfile,
    Command,
    CommandResult,
    LimitBatch,
    LimitOrder,
    LimitOutcome,
    SetChargingProfile,
    limit_command,
)
from evflex.fleet.state import FleetState
from evflex.grid.health import HealthParams
from evflex.grid.samples import FrequencySample
from tests.control.fleet_helpers import T0, fleet_of, set_power


@dataclass
class FakePort:
    """Records each send; answers only when `release` is set, with `status`.

    Like a charger, an accepted W limit lowers the EVSE's power in `fleet` (at once)
    unless the station is in `ignore`; a clear restores the power it had. `refuse`
    maps a station to the profile units it rejects.

    `send_limits` records every order of a batch at once (as the command it stands
    for) and, once released, answers the whole batch in one `on_outcomes` call;
    `batches` keeps the size of each batch.
    """

    status: str = "Accepted"
    sent: list[tuple[str, Command, bool]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    answered: int = 0
    fleet: FleetState | None = None
    ignore: set[str] = field(default_factory=set)
    refuse: dict[str, set[str]] = field(default_factory=dict)
    natural: dict[tuple[str, int], float | None] = field(default_factory=dict)
    batches: list[int] = field(default_factory=list)

    async def send(
        self,
        station_id: str,
        command: Command,
        *,
        priority: bool = False,
        timeout_s: float | None = None,
    ) -> CommandResult:
        self.sent.append((station_id, command, priority))
        await self.release.wait()
        return await self._answer(station_id, command)

    def send_limits(
        self,
        orders: Sequence[LimitOrder],
        batch: LimitBatch,
        on_outcomes: Callable[[list[LimitOutcome]], None],
        *,
        timeout_s: float | None = None,
    ) -> asyncio.Future[None]:
        commands = [limit_command(order, batch) for order in orders]
        pairs = list(zip(orders, commands, strict=True))
        self.sent.extend((order.station_id, cmd, True) for order, cmd in pairs)
        self.batches.append(len(orders))

        async def answer() -> None:
            await self.release.wait()
            outcomes: list[LimitOutcome] = []
            for index, (order, cmd) in enumerate(pairs):
                result = await self._answer(order.station_id, cmd)
                outcomes.append((index, result.status, None))
            on_outcomes(outcomes)

        return asyncio.ensure_future(answer())

    async def _answer(self, station_id: str, command: Command) -> CommandResult:
        self.answered += 1
        if isinstance(command, SetChargingProfile):
            if command.profile.unit in self.refuse.get(station_id, ()):
                return CommandResult("Rejected")
            if self.status == "Accepted" and station_id not in self.ignore:
                self._apply(station_id, command.evse_id, command.profile.periods[0].limit)
        elif isinstance(command, ClearChargingProfile) and self.fleet is not None:
            for (sid, eid), power in list(self.natural.items()):
                if sid == station_id:
                    set_power(self.fleet, sid, eid, power)
                    del self.natural[(sid, eid)]
        return CommandResult(self.status)

    def _apply(self, station_id: str, evse_id: int, limit_w: float) -> None:
        if self.fleet is None:
            return
        evse = self.fleet.stations[station_id].evses[evse_id]
        self.natural.setdefault((station_id, evse_id), evse.power_w)
        set_power(self.fleet, station_id, evse_id, min(evse.power_w or 0.0, limit_w))

    def is_connected(self, station_id: str) -> bool:
        return True


@dataclass
class Clocks:
    wall: datetime = T0
    mono: float = 1000.0

    def advance(self, s: float) -> None:
        self.wall += timedelta(seconds=s)
        self.mono += s


def engine_for(
    n: int, port: FakePort, clocks: Clocks, tx_every: int = 1, **config: object
) -> Engine:
    """n stations of one 7 kW EVSE; every `tx_every`-th has a transaction (a unit)."""
    fleet = fleet_of(*[(f"S{i}", 1, 7_000.0, i % tx_every == 0) for i in range(n)])
    port.fleet = fleet
    return Engine(
        port,
        fleet,
        EngineConfig(health=HealthParams(stale_after_s=3.0), **config),  # type: ignore[arg-type]
        wall=lambda: clocks.wall,
        mono=lambda: clocks.mono,
    )


def feed(engine: Engine, clocks: Clocks, hz: float, n: int = 3) -> None:
    for _ in range(n):
        clocks.advance(0.1)
        engine.on_sample(FrequencySample(clocks.wall.timestamp(), hz))
