"""The telemetry provisioning policy: what every station is asked to do.

A global policy (delta W, periodic s) and optional named groups that override it
for stations whose id matches one of the group's glob patterns (first group wins).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

# PowerBank: forward changes down to 100 W within 1 s, report at least every 300 s.
REQUIRED_DELTA_W = 100
REQUIRED_PERIODIC_S = 300


@dataclass(frozen=True, slots=True)
class Targets:
    """What one station is provisioned with."""

    delta_w: int = REQUIRED_DELTA_W
    periodic_s: int = REQUIRED_PERIODIC_S
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    patterns: tuple[str, ...]
    delta_w: int
    periodic_s: int

    def matches(self, station_id: str) -> bool:
        return any(fnmatch.fnmatchcase(station_id, p) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class Policy:
    delta_w: int = REQUIRED_DELTA_W
    periodic_s: int = REQUIRED_PERIODIC_S
    groups: tuple[Group, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name, delta, periodic in [
            ("global", self.delta_w, self.periodic_s),
            *((g.name, g.delta_w, g.periodic_s) for g in self.groups),
        ]:
            if delta <= 0 or periodic <= 0:
                raise ValueError(f"telemetry policy {name}: delta_w and periodic_s must be > 0")

    def for_station(self, station_id: str) -> Targets:
        for g in self.groups:
            if g.matches(station_id):
                return Targets(g.delta_w, g.periodic_s, g.name)
        return Targets(self.delta_w, self.periodic_s)
