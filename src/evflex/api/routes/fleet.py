"""Fleet-level live figures."""

from __future__ import annotations

from fastapi import APIRouter

from evflex.api.deps import RoleDep, ServicesDep
from evflex.api.schemas import EvseAgeOut, FleetOut, FreshnessOut
from evflex.telemetry.clock import utcnow
from evflex.telemetry.freshness import freshness

router = APIRouter(prefix="/api/v1", tags=["fleet"])


@router.get("/fleet", response_model=FleetOut)
async def fleet(svc: ServicesDep, _: RoleDep) -> FleetOut:
    summary = svc.fleet.summary()
    change = svc.telemetry.change_reporting if svc.telemetry is not None else None
    fresh = freshness(svc.fleet, utcnow(), change)
    return FleetOut(
        stations_known=summary.stations_known,
        stations_connected=summary.stations_connected,
        evses_charging=summary.evses_charging,
        power_w=summary.power_w,
        connections_by_protocol=svc.commands.protocol_counts(),
        freshness=FreshnessOut(
            evses_charging=fresh.evses_charging,
            share_known_within_1s=fresh.share_within_1s,
            share_known_within_5s=fresh.share_within_5s,
            share_current=fresh.share_current,
            power_ages=[
                EvseAgeOut(station_id=a.station_id, evse_id=a.evse_id, power_age_s=a.power_age_s)
                for a in fresh.ages
            ],
        ),
    )
