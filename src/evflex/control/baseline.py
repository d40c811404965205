"""Baseline: each unit's power just before activation (meter-before, MBMA-style).

For second-scale services (FCR, FFR) the pre-activation power is the natural
reference: the delivered response is measured power minus this baseline. Nordic
TSOs also want the baseline in real-time telemetry, so it is kept per unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from evflex.control.units import Key
from evflex.fleet.state import FleetState


@dataclass(frozen=True, slots=True)
class Baseline:
    """Per-EVSE power (W, load convention) captured at `taken_at`.

    `stale` lists EVSEs whose last measurement was older than the capture's max age
    (or missing): their baseline is a guess, and a verifier should know.
    """

    taken_at: datetime
    power_w: Mapping[Key, float]
    stale: frozenset[Key] = field(default_factory=frozenset)

    @property
    def total_w(self) -> float:
        return sum(self.power_w.values())


def capture_baseline(fleet: FleetState, now: datetime, max_age_s: float = 60.0) -> Baseline:
    """Snapshot the last measured power of every EVSE of the connected stations.

    An EVSE with no measurement counts 0 W and is marked stale, as is one whose
    measurement is older than `max_age_s` seconds at `now`.
    """
    power: dict[Key, float] = {}
    stale: set[Key] = set()
    for station in fleet.stations.values():
        if not station.connected:
            continue
        for evse in station.evses.values():
            key = (station.station_id, evse.evse_id)
            power[key] = evse.power_w or 0.0
            at = evse.power_measured_at
            if at is None or (now - at).total_seconds() > max_age_s:
                stale.add(key)
    return Baseline(now, power, frozenset(stale))
