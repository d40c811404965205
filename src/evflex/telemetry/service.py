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
        return freshness(self.fleet, now or self.clock(), self.change_reporting)

    def change_reporting(self, station_id: str) -> float | None:
        """The station's periodic interval (s) if its provisioning set up forwarding of
        power changes (1.6 delta key, 2.0.1 Delta monitors) and it did not fail, else
        None. Observed silence shows as an overdue periodic report (freshness)."""
        p = self.provisioner.results.get(station_id)
        if p is None or p.error is not None or p.finished_at is None:
            return None
        delta = [o for o in p.outcomes if o.requirement == "delta"]
        if not delta or not all(o.ok for o in delta):
            return None
        return float(p.targets.periodic_s)

    async def withdraw(self, station_id: str) -> None:
        await self.provisioner.withdraw(station_id)

    async def stop(self) -> None:
        await self.provisioner.stop()
