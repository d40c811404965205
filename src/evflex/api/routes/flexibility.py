"""What the allocator must respect: each session's needs and each EVSE's capabilities.

A session's needs normally come from the EV (OCPP 2.0.1 NotifyEVChargingNeeds); a
driver app or the operator can state them here (1.6 has no such message). They go
through the domain (a `ChargingNeedsReported` event), so fleet state, the grid engine
and the API all see the same thing, and they end with the transaction.

EVSE specs (power rating, phases, V2G, battery storage protection limits) are
inventory: per hardware model in the configuration (`grid_model_specs`), or per EVSE
here. Per-EVSE specs are kept in memory (re-applied by the operator's inventory
sync after a restart).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field, model_validator

from evflex.api.deps import RoleDep, ServicesDep
from evflex.config import HardwareSpec
from evflex.control.loop import Engine
from evflex.fleet.events import ChargingNeedsReported
from evflex.fleet.model import ChargingNeeds

router = APIRouter(prefix="/api/v1/stations", tags=["grid"])


class SessionNeedsIn(BaseModel):
    departure: datetime | None = Field(None, description="when the driver leaves (ISO 8601)")
    energy_need_wh: float | None = Field(None, ge=0, description="energy still wanted (Wh)")
    ev_max_power_w: float | None = Field(None, gt=0)
    battery_wh: float | None = Field(None, gt=0, description="battery capacity (Wh), for V2G")
    v2g: bool = Field(False, description="vehicle able and driver consenting to discharge")
    opt_out: bool = Field(False, description="driver declines grid balancing this session")
    reserve_pct: float | None = Field(None, ge=0, le=100, description="V2G floor SoC (%)")

    @model_validator(mode="after")
    def _aware(self) -> SessionNeedsIn:
        if self.departure is not None and self.departure.tzinfo is None:
            raise ValueError("departure needs a UTC offset, e.g. 2026-11-22T18:00:00Z")
        return self


class SessionNeedsOut(SessionNeedsIn):
    station_id: str
    evse_id: int
    source: str
    at: datetime


def _known(svc: ServicesDep, station_id: str, evse_id: int) -> None:
    station = svc.fleet.stations.get(station_id)
    if station is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown station {station_id}")
    if evse_id not in station.evses:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{station_id} has no EVSE {evse_id}")


def _engine(svc: ServicesDep) -> Engine:
    if svc.grid is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "grid services are not enabled")
    return svc.grid


@router.put("/{station_id}/evses/{evse_id}/session", response_model=SessionNeedsOut)
async def put_session_needs(
    svc: ServicesDep, _: RoleDep, station_id: str, evse_id: int, body: SessionNeedsIn
) -> SessionNeedsOut:
    """State the running session's needs (departure, energy, V2G consent, opt-out)."""
    _known(svc, station_id, evse_id)
    evse = svc.fleet.stations[station_id].evses[evse_id]
    if evse.transaction is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"no session on {station_id}/{evse_id}")
    if svc.publish is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no event bus")
    needs = ChargingNeeds(
        at=datetime.now(UTC),
        source="api",
        departure_at=body.departure,
        energy_wh=body.energy_need_wh,
        ev_max_power_w=body.ev_max_power_w,
        battery_wh=body.battery_wh,
        v2g=body.v2g,
        opt_out=body.opt_out,
        reserve_pct=body.reserve_pct,
    )
    svc.publish(ChargingNeedsReported(station_id, evse_id, needs))
    return _needs_out(station_id, evse_id, evse.needs or needs)


@router.get("/{station_id}/evses/{evse_id}/session", response_model=SessionNeedsOut)
async def get_session_needs(
    svc: ServicesDep, _: RoleDep, station_id: str, evse_id: int
) -> SessionNeedsOut:
    """The session's needs as evflex knows them (from the EV or stated here)."""
    _known(svc, station_id, evse_id)
    needs = svc.fleet.stations[station_id].evses[evse_id].needs
    if needs is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no needs known for this session")
    return _needs_out(station_id, evse_id, needs)


def _needs_out(station_id: str, evse_id: int, n: ChargingNeeds) -> SessionNeedsOut:
    return SessionNeedsOut(
        station_id=station_id,
        evse_id=evse_id,
        source=n.source,
        at=n.at,
        departure=n.departure_at,
        energy_need_wh=n.energy_wh,
        ev_max_power_w=n.ev_max_power_w,
        battery_wh=n.battery_wh,
        v2g=n.v2g,
        opt_out=n.opt_out,
        reserve_pct=n.reserve_pct,
    )


@router.put("/{station_id}/evses/{evse_id}/spec", response_model=HardwareSpec)
async def put_evse_spec(
    svc: ServicesDep, _: RoleDep, station_id: str, evse_id: int, body: HardwareSpec
) -> HardwareSpec:
    """Set an EVSE's capabilities for allocation (overrides its model's spec)."""
    _known(svc, station_id, evse_id)
    _engine(svc).set_spec((station_id, evse_id), body.to_spec())
    return body
