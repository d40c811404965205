"""FleetState: the live fleet, updated event by event with O(1) aggregates.

State lives here, not in socket sessions, so a reconnect loses nothing. Every
`apply` keeps three running aggregates exact without scanning the fleet:
stations connected, EVSEs charging and total active power.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from evflex.fleet.events import (
    ChargingNeedsReported,
    Event,
    MeterSampled,
    StationBooted,
    StationConnected,
    StationDisconnected,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
    TransactionUpdated,
)
from evflex.fleet.model import Evse, EvseStatus, Station, Transaction

POWER_MEASURAND = "Power.Active.Import"
EXPORT_MEASURAND = "Power.Active.Export"
ENERGY_MEASURAND = "Energy.Active.Import.Register"
SOC_MEASURAND = "SoC"
_CHARGING_STATES = {
    "Charging": EvseStatus.CHARGING,
    "SuspendedEV": EvseStatus.SUSPENDED_EV,
    "SuspendedEVSE": EvseStatus.SUSPENDED_EVSE,
}


@dataclass(frozen=True, slots=True)
class FleetSummary:
    stations_known: int
    stations_connected: int
    evses_charging: int
    power_w: float


class FleetState:
    """All stations by id, plus aggregates maintained incrementally."""

    def __init__(self) -> None:
        self.stations: dict[str, Station] = {}
        self._connected = 0
        self._charging = 0
        self._power_w = 0.0
        self._next_tx_id = 1

    # -- queries -----------------------------------------------------------
    def summary(self) -> FleetSummary:
        return FleetSummary(len(self.stations), self._connected, self._charging, self._power_w)

    def station(self, station_id: str) -> Station:
        station = self.stations.get(station_id)
        if station is None:
            station = self.stations[station_id] = Station(station_id)
        return station

    def recompute(self) -> FleetSummary:
        """Full scan, used only by tests and after a bulk load to check the running totals."""
        connected = sum(1 for s in self.stations.values() if s.connected)
        evses = [e for s in self.stations.values() for e in s.evses.values()]
        charging = sum(1 for e in evses if e.charging)
        power = sum(e.power_w or 0.0 for e in evses)
        return FleetSummary(len(self.stations), connected, charging, power)

    def reset_aggregates(self) -> None:
        """Recompute the running totals after state was loaded in bulk (start-up)."""
        summary = self.recompute()
        self._connected, self._charging, self._power_w = (
            summary.stations_connected,
            summary.evses_charging,
            summary.power_w,
        )

    # -- decisions the gateway asks for -------------------------------------
    def allocate_transaction_id(self) -> int:
        """Integer ids for OCPP 1.6 StartTransaction; seeded from storage at start-up."""
        tx_id = self._next_tx_id
        self._next_tx_id += 1
        return tx_id

    def seed_transaction_ids(self, highest_used: int) -> None:
        self._next_tx_id = max(self._next_tx_id, highest_used + 1)

    # -- event application ---------------------------------------------------
    def apply(self, event: Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _on_connected(self, ev: StationConnected) -> None:
        station = self.station(ev.station_id)
        if not station.connected:
            self._connected += 1
        station.connected = True
        station.protocol = ev.protocol
        station.connected_at = station.last_seen = ev.at

    def _on_disconnected(self, ev: StationDisconnected) -> None:
        station = self.stations.get(ev.station_id)
        if station is not None and station.connected:
            self._connected -= 1
            station.connected = False

    def _on_booted(self, ev: StationBooted) -> None:
        station = self.station(ev.station_id)
        station.vendor, station.model = ev.vendor, ev.model
        station.firmware, station.serial = ev.firmware, ev.serial
        station.booted_at = station.last_seen = ev.at

    def _on_seen(self, ev: StationSeen) -> None:
        self.station(ev.station_id).last_seen = ev.at

    def _on_status(self, ev: StatusChanged) -> None:
        station = self.station(ev.station_id)
        if ev.evse_id == 0:
            return  # connector 0 in 1.6 is the whole station, not an outlet
        evse = station.evse(ev.evse_id)
        if (
            ev.status is EvseStatus.OCCUPIED
            and evse.transaction is not None
            and evse.status in _CHARGING_STATES.values()
        ):
            # 2.0.1 reports only "Occupied"; the transaction's chargingState is more specific
            evse.status_at = ev.at
            return
        self._set_status(evse, ev.status, ev.at)

    def _set_status(self, evse: Evse, status: EvseStatus, at: datetime) -> None:
        self._charging += int(status is EvseStatus.CHARGING) - int(evse.charging)
        evse.status, evse.status_at = status, at

    def _on_meter(self, ev: MeterSampled) -> None:
        station = self.station(ev.station_id)
        if ev.evse_id == 0:
            # 1.6 connector 0 is the station's main meter, not an outlet, unless the
            # sample belongs to a transaction (StopTransaction.transactionData)
            found = station.find_transaction(ev.transaction_id) if ev.transaction_id else None
            if found is None:
                return
            evse = found
        else:
            evse = station.evse(ev.evse_id)
        if evse.power_measured_at is not None and ev.at < evse.power_measured_at:
            return  # an offline backlog sample older than what we know: history only
        power = _net_power_w(ev)
        if power is not None:
            self._power_w += power - (evse.power_w or 0.0)
            evse.power_w, evse.power_measured_at = power, ev.at
        for sv in ev.values:
            if sv.measurand == ENERGY_MEASURAND and sv.phase is None:
                evse.energy_wh = _to_wh(sv.value, sv.unit)
            elif sv.measurand == SOC_MEASURAND:
                evse.soc_pct = sv.value

    def _on_tx_started(self, ev: TransactionStarted) -> None:
        evse = self.station(ev.station_id).evse(ev.evse_id)
        evse.transaction = Transaction(
            transaction_id=ev.transaction_id,
            evse_id=ev.evse_id,
            started_at=ev.at,
            id_token=ev.id_token,
            meter_start_wh=ev.meter_start_wh,
            last_seq_no=ev.seq_no if ev.seq_no is not None else -1,
            offline_events=int(ev.offline),
        )

    def _on_tx_updated(self, ev: TransactionUpdated) -> None:
        station = self.station(ev.station_id)
        evse = station.find_transaction(ev.transaction_id)
        if evse is None:
            # 2.0.1 may report Updated without a Started we saw (CSMS restart, lost frame)
            evse = station.evse(ev.evse_id)
            evse.transaction = Transaction(ev.transaction_id, ev.evse_id, ev.at)
        assert evse.transaction is not None
        _track_seq(evse.transaction, ev.seq_no, ev.offline)
        status = _CHARGING_STATES.get(ev.charging_state or "")
        if status is not None and not ev.offline:
            self._set_status(evse, status, ev.at)
        elif ev.charging_state in ("EVConnected", "Idle") and not ev.offline:
            self._set_status(evse, EvseStatus.OCCUPIED, ev.at)

    def _on_needs(self, ev: ChargingNeedsReported) -> None:
        evse = self.station(ev.station_id).evse(ev.evse_id)
        needs = ev.needs
        if needs.energy_wh is not None and needs.register_wh is None:
            needs = replace(needs, register_wh=evse.energy_wh)  # to count energy since
        evse.needs = needs

    def _on_tx_stopped(self, ev: TransactionStopped) -> None:
        station = self.station(ev.station_id)
        evse = station.find_transaction(ev.transaction_id)
        if evse is None or evse.transaction is None:
            return
        tx = evse.transaction
        _track_seq(tx, ev.seq_no, ev.offline)
        tx.stopped_at, tx.meter_stop_wh, tx.stop_reason = ev.at, ev.meter_stop_wh, ev.reason
        evse.transaction = None
        evse.needs = None  # the session's needs end with it
        if evse.charging:
            self._set_status(evse, EvseStatus.FINISHING, ev.at)
        # a finished session draws no power; keep the aggregate honest
        self._power_w -= evse.power_w or 0.0
        evse.power_w, evse.power_measured_at = 0.0, ev.at


def _track_seq(tx: Transaction, seq_no: int | None, offline: bool) -> None:
    """Count gaps in 2.0.1 TransactionEvent seqNo (E01.FR.?: seqNo increments by 1 per event)."""
    if seq_no is not None:
        if tx.last_seq_no >= 0 and seq_no > tx.last_seq_no + 1:
            tx.seq_gaps += seq_no - tx.last_seq_no - 1
        tx.last_seq_no = max(tx.last_seq_no, seq_no)
    tx.offline_events += int(offline)


def _to_wh(value: float, unit: str | None) -> float:
    return value * 1000.0 if unit == "kWh" else value


def _to_w(value: float, unit: str | None) -> float:
    return value * 1000.0 if unit == "kW" else value


def _net_power_w(ev: MeterSampled) -> float | None:
    """Net active power (import positive, export negative), preferring the total over phases."""
    imp = exp = None
    phase_sum = 0.0
    phases = 0
    for sv in ev.values:
        if sv.measurand == POWER_MEASURAND:
            if sv.phase is None or sv.phase == "N":
                imp = _to_w(sv.value, sv.unit)
            else:
                phase_sum += _to_w(sv.value, sv.unit)
                phases += 1
        elif sv.measurand == EXPORT_MEASURAND and sv.phase is None:
            exp = _to_w(sv.value, sv.unit)
    if imp is None and phases:
        imp = phase_sum
    if imp is None and exp is None:
        return None
    return (imp or 0.0) - (exp or 0.0)


_HANDLERS: dict[type, Callable[[FleetState, Any], None]] = {
    StationConnected: FleetState._on_connected,
    StationDisconnected: FleetState._on_disconnected,
    StationBooted: FleetState._on_booted,
    StationSeen: FleetState._on_seen,
    StatusChanged: FleetState._on_status,
    MeterSampled: FleetState._on_meter,
    TransactionStarted: FleetState._on_tx_started,
    TransactionUpdated: FleetState._on_tx_updated,
    TransactionStopped: FleetState._on_tx_stopped,
    ChargingNeedsReported: FleetState._on_needs,
}
