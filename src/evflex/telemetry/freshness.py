"""Freshness: how old is the power value we hold for each charging EVSE?

Age = now − the station's measurement time of the last power value (never negative:
a station clock ahead of ours counts as 0). Note that stations commonly stamp
whole seconds, which adds up to 1 s, and that a station reporting on change only
(delta) holds an unchanged value longer — its age then says "no change ≥ delta".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from evflex.fleet.state import FleetState


@dataclass(frozen=True, slots=True)
class EvseAge:
    station_id: str
    evse_id: int
    power_age_s: float | None  # None: no power value at all


@dataclass(frozen=True, slots=True)
class Freshness:
    evses_charging: int
    known_within_1s: int
    known_within_5s: int
    ages: tuple[EvseAge, ...]

    @property
    def share_within_1s(self) -> float:
        return self.known_within_1s / self.evses_charging if self.evses_charging else 1.0

    @property
    def share_within_5s(self) -> float:
        return self.known_within_5s / self.evses_charging if self.evses_charging else 1.0


def power_age_s(measured_at: datetime | None, now: datetime) -> float | None:
    if measured_at is None:
        return None
    return max(0.0, (now - measured_at).total_seconds())


def freshness(fleet: FleetState, now: datetime) -> Freshness:
    """One pass over the fleet (about 1 µs per EVSE)."""
    ages: list[EvseAge] = []
    within_1 = within_5 = 0
    for station in fleet.stations.values():
        for evse in station.evses.values():
            if not evse.charging:
                continue
            age = power_age_s(evse.power_measured_at, now)
            ages.append(EvseAge(station.station_id, evse.evse_id, age))
            if age is not None and age <= 5.0:
                within_5 += 1
                within_1 += age <= 1.0
    return Freshness(len(ages), within_1, within_5, tuple(ages))
