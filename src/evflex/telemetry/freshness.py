"""Freshness: how old is the power value we hold for each charging EVSE?

Age = now − the station's measurement time of the last power value (never negative:
a station clock ahead of ours counts as 0). Note that stations commonly stamp
whole seconds, which adds up to 1 s, and that a station reporting on change only
(delta) holds an unchanged value longer — its age then says "no change ≥ delta".

Hence a third figure, *current*: the value is reported within 1 s, or the station
forwards every change of more than its delta within 1 s (provisioned so) and its
periodic report is not overdue — then an old value still means "no change beyond
the delta". Age alone would call a steady, well-behaved fleet 0 % fresh.
"""

from __future__ import annotations

from collections.abc import Callable
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
    current: int = 0  # reported within 1 s, or reports changes and is not overdue

    @property
    def share_current(self) -> float:
        return self.current / self.evses_charging if self.evses_charging else 1.0

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


# A periodic report may arrive this much after its interval and still count as on time
# (station clocks stamp whole seconds; the report travels).
PERIODIC_GRACE_S = 5.0


def freshness(
    fleet: FleetState,
    now: datetime,
    change_reporting: Callable[[str], float | None] | None = None,
) -> Freshness:
    """One pass over the fleet (about 1 µs per EVSE).

    `change_reporting(station_id)`: the station's periodic interval in s if it is
    provisioned to forward power changes within 1 s, else None (see module doc).
    """
    ages: list[EvseAge] = []
    within_1 = within_5 = current = 0
    for station in fleet.stations.values():
        periodic_s: float | None = None
        if change_reporting is not None and station.connected:
            periodic_s = change_reporting(station.station_id)
        for evse in station.evses.values():
            if not evse.charging:
                continue
            age = power_age_s(evse.power_measured_at, now)
            ages.append(EvseAge(station.station_id, evse.evse_id, age))
            if age is None:
                continue
            if age <= 5.0:
                within_5 += 1
                within_1 += age <= 1.0
            if age <= 1.0 or (periodic_s is not None and age <= periodic_s + PERIODIC_GRACE_S):
                current += 1
    return Freshness(len(ages), within_1, within_5, tuple(ages), current)
