"""Per-EVSE state of a simulated station: the vehicle, the transaction, the meter.

A charger has one EVSE; a battery storage system has two virtual connectors
(1 = discharge, 2 = charge). Power is signed: positive flows into the vehicle or
battery (Power.Active.Import), negative flows out of it (Power.Active.Export).
"""

from __future__ import annotations

import enum

from evflex.sim.ev import Ev
from evflex.sim.schedule import UNLIMITED, Limit


class State(enum.Enum):
    """What an EVSE is doing, independent of how each OCPP version names it."""

    AVAILABLE = "available"
    PLUGGED = "plugged"  # EV connected, no transaction yet (authorizing, refused)
    CHARGING = "charging"  # energy flowing, either direction
    SUSPENDED_EV = "suspended_ev"  # the car takes nothing (full, or at its limit)
    SUSPENDED_EVSE = "suspended_evse"  # the station's limit stops the flow
    FINISHING = "finishing"  # transaction over, car still plugged
    UNAVAILABLE = "unavailable"


class Transaction:
    """One charging transaction; `remote_id` is the 1.6 id the CSMS assigns."""

    __slots__ = (
        "id_tag",
        "local_id",
        "meter_start_wh",
        "remote_id",
        "remote_start_id",
        "seq",
        "started",
    )

    def __init__(self, local_id: str, id_tag: str, started: float, meter_start_wh: float) -> None:
        self.local_id = local_id
        self.id_tag = id_tag
        self.started = started
        self.meter_start_wh = meter_start_wh
        self.remote_id: int | None = None
        self.remote_start_id: int | None = None
        self.seq = 0

    def next_seq(self) -> int:
        """2.0.1 TransactionEvent seqNo: 0, 1, 2, ... within the transaction."""
        seq = self.seq
        self.seq += 1
        return seq


class Evse:
    __slots__ = (
        "ev",
        "export_wh",
        "id",
        "import_wh",
        "last_reported_w",
        "last_tick",
        "limit",
        "limit_dirty",
        "next_sample_at",
        "operative",
        "power_w",
        "state",
        "tx",
    )

    def __init__(self, evse_id: int) -> None:
        self.id = evse_id
        self.ev: Ev | None = None
        self.tx: Transaction | None = None
        self.state = State.AVAILABLE
        self.operative = True
        self.power_w = 0.0
        self.import_wh = 0.0
        self.export_wh = 0.0
        self.limit: Limit = UNLIMITED
        self.limit_dirty = True
        self.last_reported_w = 0.0
        self.next_sample_at = 0.0
        self.last_tick = 0.0

    @property
    def register_wh(self) -> float:
        """The import register (Energy.Active.Import.Register)."""
        return self.import_wh
