"""Fleet-level live figures."""

from __future__ import annotations

from fastapi import APIRouter

from evflex.api.deps import RoleDep, ServicesDep
from evflex.api.schemas import FleetOut

router = APIRouter(prefix="/api/v1", tags=["fleet"])


@router.get("/fleet", response_model=FleetOut)
async def fleet(svc: ServicesDep, _: RoleDep) -> FleetOut:
    summary = svc.fleet.summary()
    return FleetOut(
        stations_known=summary.stations_known,
        stations_connected=summary.stations_connected,
        evses_charging=summary.evses_charging,
        power_w=summary.power_w,
        connections_by_protocol=svc.commands.protocol_counts(),
    )
