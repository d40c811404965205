"""The telemetry service the composition root wires: provisioner + observer + reports."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from evflex.fleet.commands import CommandPort
from evflex.fleet.events import Event, EventSink
from evflex.fleet.state import FleetState
from evflex.telemetry.clock import utcnow
from evflex.telemetry.freshness import Freshness, freshness
from evflex.telemetry.observer import Observer
from evflex.telemetry.policy import Policy
from evflex.telemetry.provisioner import Provisioner
from evflex.telemetry.readiness import (
    ModelReadiness,
    StationReadiness,
    assess,
    by_model,
    with_control,
)


class Telemetry:
    """Subscribe it to the event hub after fleet state: `hub.subscribe(telemetry)`."""

    def __init__(
        self,
        port: CommandPort,
        fleet: FleetState,
        sink: EventSink,
        policy: Policy,
        *,
        concurrency: int = 200,
        rate_per_s: float = 0.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.observer = Observer()
        # what the grid engine saw each station do with its limits (reasons by station)
        self.control: Callable[[str], list[str]] | None = None
        self.provisioner = Provisioner(
            port, fleet, sink, policy, concurrency=concurrency, rate_per_s=rate_per_s, clock=clock
        )

    def __call__(self, event: Event) -> None:
        self.observer(event)
        self.provisioner(event)

    def readiness(self, now: datetime | None = None) -> list[StationReadiness]:
        now = now or self.clock()
        results = self.provisioner.results
        out = [
            assess(station, results.get(sid), self.observer.for_station(sid), now)
            for sid, station in sorted(self.fleet.stations.items())
        ]
        if self.control is not None:
            out = [with_control(r, self.control(r.station_id)) for r in out]
        return out

    def models(self, now: datetime | None = None) -> list[ModelReadiness]:
        return by_model(self.readiness(now))

    def freshness(self, now: datetime | None = None) -> Freshness:
        return freshness(self.fleet, now or self.clock())

    async def withdraw(self, station_id: str) -> None:
        await self.provisioner.withdraw(station_id)

    async def stop(self) -> None:
        await self.provisioner.stop()
