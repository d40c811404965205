"""Domain objects of the fleet: stations, EVSEs and transactions (version-neutral)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Protocol(enum.StrEnum):
    OCPP16 = "ocpp1.6"
    OCPP201 = "ocpp2.0.1"


class EvseStatus(enum.StrEnum):
    """Connector/EVSE status, the union of the OCPP 1.6 and 2.0.1 vocabularies.

    1.6 has a richer set (Preparing/Charging/SuspendedEV/...); 2.0.1 only reports
    Available/Occupied/Reserved/Unavailable/Faulted and leaves charging state to
    TransactionEvent.chargingState. We keep the most specific status we know.
    """

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    OCCUPIED = "Occupied"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"
    UNKNOWN = "Unknown"


@dataclass(slots=True)
class Transaction:
    transaction_id: str
    evse_id: int
    started_at: datetime
    id_token: str | None = None
    meter_start_wh: float | None = None
    stopped_at: datetime | None = None
    meter_stop_wh: float | None = None
    stop_reason: str | None = None
    last_seq_no: int = -1
    seq_gaps: int = 0
    offline_events: int = 0

    @property
    def active(self) -> bool:
        return self.stopped_at is None


@dataclass(frozen=True, slots=True)
class ChargingNeeds:
    """What the EV (ISO 15118, OCPP 2.0.1 NotifyEVChargingNeeds) or the driver's app
    said about this session. Unknown fields are None: the session is then treated as
    fully flexible in that respect.

    `energy_wh` is the energy still wanted when reported, `register_wh` the EVSE's
    energy register at that moment, so the need left later is energy_wh − (register
    now − register_wh).
    """

    at: datetime
    source: str  # "ev" (from the station) or "api" (operator, driver app)
    departure_at: datetime | None = None
    energy_wh: float | None = None
    register_wh: float | None = None
    ev_max_power_w: float | None = None
    battery_wh: float | None = None
    v2g: bool = False  # vehicle able and driver consenting to discharge
    opt_out: bool = False  # driver declined grid balancing for this session
    reserve_pct: float | None = None  # V2G never discharges below this SoC


@dataclass(slots=True)
class Evse:
    evse_id: int
    status: EvseStatus = EvseStatus.UNKNOWN
    status_at: datetime | None = None
    power_w: float | None = None
    power_measured_at: datetime | None = None
    energy_wh: float | None = None
    soc_pct: float | None = None
    transaction: Transaction | None = None
    needs: ChargingNeeds | None = None

    @property
    def charging(self) -> bool:
        return self.status is EvseStatus.CHARGING


@dataclass(slots=True)
class Station:
    station_id: str
    protocol: Protocol | None = None
    connected: bool = False
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    booted_at: datetime | None = None
    last_seen: datetime | None = None
    connected_at: datetime | None = None
    evses: dict[int, Evse] = field(default_factory=dict)

    def evse(self, evse_id: int) -> Evse:
        evse = self.evses.get(evse_id)
        if evse is None:
            evse = self.evses[evse_id] = Evse(evse_id)
        return evse

    def find_transaction(self, transaction_id: str) -> Evse | None:
        for evse in self.evses.values():
            if evse.transaction is not None and evse.transaction.transaction_id == transaction_id:
                return evse
        return None
