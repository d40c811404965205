"""What stations actually do: per EVSE, the power reports seen since provisioning.

A hub subscriber on the message hot path — per MeterSampled with a power value it
does a dict lookup and a few assignments (no allocation after the first report).
Counts restart when a station's provisioning changed something, so observations
judge the settings that are in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from evflex.fleet.events import Event, MeterSampled, StationNotice

POWER = "Power.Active.Import"
# Change-triggered reports: 2.0.1 Delta events arrive as "Trigger", 1.6 delta-trigger
# MeterValues carry "Other" (or no context); everything else is periodic/clock/tx.
_TRIGGERED = frozenset({"Trigger", "Other", None})
# Station timestamps often have whole-second resolution: up to 1 s of apparent latency
# comes from truncation alone.
LATE_S = 2.0


@dataclass(slots=True)
class EvseObservation:
    since: datetime  # counting started (provisioning completed), our clock
    reports: int = 0
    triggered: int = 0
    late: int = 0  # received more than LATE_S after the station measured
    missed_changes: int = 0  # a periodic report ≥ delta away from the previous one
    max_gap_s: float = 0.0  # longest interval between reports within one transaction
    last_received: datetime | None = None
    last_value: float | None = None
    last_tx: str | None = None


class Observer:
    def __init__(self) -> None:
        self.stations: dict[str, dict[int, EvseObservation]] = {}
        self.since: dict[str, datetime] = {}  # station → provisioning completed at
        self.delta_w: dict[str, float] = {}

    def __call__(self, event: Event) -> None:
        kind = type(event)
        if kind is MeterSampled:
            assert isinstance(event, MeterSampled)
            for sv in event.values:
                if sv.measurand == POWER and sv.phase is None:
                    self._power(event, sv.value * (1000.0 if sv.unit == "kW" else 1.0), sv.context)
                    return
        elif kind is StationNotice:
            assert isinstance(event, StationNotice)
            if event.kind == "telemetry_provisioning" and (
                event.data["writes"] or event.station_id not in self.since
            ):
                # settings changed: judge what the station does from now on
                self.restart(event.station_id, event.at, float(event.data["targets"]["delta_w"]))

    def restart(self, station_id: str, at: datetime, delta_w: float) -> None:
        self.since[station_id] = at
        self.delta_w[station_id] = delta_w
        self.stations[station_id] = {}

    def for_station(self, station_id: str) -> dict[int, EvseObservation]:
        return self.stations.get(station_id, {})

    def _power(self, ev: MeterSampled, value: float, context: str | None) -> None:
        since = self.since.get(ev.station_id)
        if since is None or ev.received_at < since:
            return  # not provisioned yet: nothing to judge against
        evses = self.stations[ev.station_id]
        obs = evses.get(ev.evse_id)
        if obs is None:
            obs = evses[ev.evse_id] = EvseObservation(since)
        obs.reports += 1
        if (ev.received_at - ev.at).total_seconds() > LATE_S:
            obs.late += 1
        if context in _TRIGGERED:
            obs.triggered += 1
        elif (
            obs.last_value is not None
            and ev.transaction_id is not None
            and ev.transaction_id == obs.last_tx
            and abs(value - obs.last_value) >= self.delta_w.get(ev.station_id, float("inf"))
        ):
            obs.missed_changes += 1
        if (
            obs.last_received is not None
            and ev.transaction_id is not None
            and ev.transaction_id == obs.last_tx
        ):
            gap = (ev.received_at - obs.last_received).total_seconds()
            obs.max_gap_s = max(obs.max_gap_s, gap)
        obs.last_received, obs.last_value, obs.last_tx = ev.received_at, value, ev.transaction_id
