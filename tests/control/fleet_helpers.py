"""Small fleet builders for control tests (state set directly, no events)."""

from __future__ import annotations

from datetime import UTC, datetime

from evflex.fleet.events import MeterSampled, SampledValue
from evflex.fleet.model import Evse, EvseStatus, Station, Transaction
from evflex.fleet.state import FleetState

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def fleet_of(
    *evses: tuple[str, int, float | None, bool],
    connected: bool = True,
    status: EvseStatus = EvseStatus.CHARGING,
    soc_pct: float | None = None,
) -> FleetState:
    """(station_id, evse_id, power_w, has_transaction) per EVSE."""
    fleet = FleetState()
    for sid, eid, power, tx in evses:
        station = fleet.stations.setdefault(sid, Station(sid, connected=connected))
        station.evses[eid] = Evse(
            eid,
            status=status,
            power_w=power,
            power_measured_at=T0 if power is not None else None,
            soc_pct=soc_pct,
            transaction=Transaction(f"{sid}-{eid}", eid, T0) if tx else None,
        )
    fleet.reset_aggregates()  # state was set directly: recompute the running totals
    return fleet


def set_power(fleet: FleetState, station_id: str, evse_id: int, power_w: float | None) -> None:
    """A meter reading through the fleet's own event path (keeps the aggregates right)."""
    now = datetime.now(UTC)
    value = () if power_w is None else (SampledValue("Power.Active.Import", power_w, "W"),)
    fleet.apply(MeterSampled(station_id, evse_id, now, now, value))
