"""Stations: registration, live state and history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from evflex.api.deps import RoleDep, ServicesDep
from evflex.api.schemas import (
    BulkCreated,
    EvseOut,
    StationCreated,
    StationIn,
    StationOut,
    StationSummary,
    TransactionOut,
)
from evflex.fleet.credentials import WeakPasswordError, generate_password
from evflex.fleet.errors import DuplicateStation
from evflex.fleet.model import Station
from evflex.telemetry.clock import utcnow
from evflex.telemetry.freshness import power_age_s

router = APIRouter(prefix="/api/v1/stations", tags=["stations"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StationCreated)
async def register_station(body: StationIn, svc: ServicesDep, _: RoleDep) -> StationCreated:
    generated = body.password is None
    password = generate_password() if generated else body.password
    try:
        await svc.registry.register(body.id, password)
    except WeakPasswordError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except DuplicateStation:
        raise HTTPException(status.HTTP_409_CONFLICT, f"station {body.id} already exists") from None
    return StationCreated(id=body.id, password=password if generated else None)


@router.post("/bulk", status_code=status.HTTP_201_CREATED, response_model=BulkCreated)
async def register_stations(
    body: Annotated[list[StationIn], ...],
    svc: ServicesDep,
    _: RoleDep,
) -> BulkCreated:
    """Register many stations at once (all or nothing). Every item needs a password."""
    if any(s.password is None for s in body):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "bulk registration needs a password for every station",
        )
    ids = [s.id for s in body]
    if len(set(ids)) != len(ids):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "duplicate ids in request")
    try:
        created = await svc.registry.register_many([(s.id, s.password) for s in body])
    except DuplicateStation as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"already registered: {exc}") from None
    return BulkCreated(created=created)


@router.get("", response_model=list[StationSummary])
async def list_stations(
    svc: ServicesDep,
    _: RoleDep,
    connected: Annotated[bool | None, Query(description="filter by connection state")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[StationSummary]:
    stations = sorted(svc.fleet.stations.values(), key=lambda s: s.station_id)
    if connected is not None:
        stations = [s for s in stations if s.connected is connected]
    return [_summary(s) for s in stations[offset : offset + limit]]


@router.get("/{station_id}", response_model=StationOut)
async def get_station(station_id: str, svc: ServicesDep, _: RoleDep) -> StationOut:
    station = _known(svc, station_id)
    evses = [_evse(e) for e in sorted(station.evses.values(), key=lambda e: e.evse_id)]
    return StationOut(
        **_summary(station).model_dump(),
        serial=station.serial,
        booted_at=station.booted_at,
        connected_at=station.connected_at,
        evses=evses,
    )


@router.delete("/{station_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_station(station_id: str, svc: ServicesDep, _: RoleDep) -> None:
    _known(svc, station_id)
    if svc.telemetry is not None:
        await svc.telemetry.withdraw(station_id)  # N06: clear the monitors we set
    await svc.registry.remove(station_id)


@router.get("/{station_id}/meter-values")
async def meter_values(
    station_id: str,
    svc: ServicesDep,
    _: RoleDep,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    evse_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> list[dict[str, Any]]:
    """Stored meter samples, one row per sampled value, ordered by the station's timestamp."""
    _known(svc, station_id)
    if start is not None and end is not None and end < start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'to' is before 'from'")
    return await svc.history.meter_values(station_id, start, end, limit, evse_id)


@router.get("/{station_id}/transactions")
async def transactions(
    station_id: str,
    svc: ServicesDep,
    _: RoleDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    _known(svc, station_id)
    return await svc.history.transactions(station_id, limit)


@router.get("/{station_id}/command-log")
async def command_log(
    station_id: str,
    svc: ServicesDep,
    _: RoleDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    _known(svc, station_id)
    return await svc.history.command_log(station_id, limit)


@router.get("/{station_id}/events")
async def station_events(
    station_id: str,
    svc: ServicesDep,
    _: RoleDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    """Security events, firmware status, reports and data transfers the station sent."""
    _known(svc, station_id)
    return await svc.history.station_events(station_id, limit)


def _known(svc: ServicesDep, station_id: str) -> Station:
    station = svc.fleet.stations.get(station_id)
    if station is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown station {station_id}")
    return station


def _summary(s: Station) -> StationSummary:
    return StationSummary(
        id=s.station_id,
        connected=s.connected,
        protocol=s.protocol.value if s.protocol else None,
        vendor=s.vendor,
        model=s.model,
        firmware=s.firmware,
        last_seen=s.last_seen,
    )


def _evse(e: Any) -> EvseOut:
    tx = e.transaction
    return EvseOut(
        evse_id=e.evse_id,
        status=e.status.value,
        status_at=e.status_at,
        power_w=e.power_w,
        power_measured_at=e.power_measured_at,
        power_age_s=power_age_s(e.power_measured_at, utcnow()),
        energy_wh=e.energy_wh,
        soc_pct=e.soc_pct,
        transaction=TransactionOut(
            transaction_id=tx.transaction_id,
            started_at=tx.started_at,
            id_token=tx.id_token,
            meter_start_wh=tx.meter_start_wh,
            seq_gaps=tx.seq_gaps,
            offline_events=tx.offline_events,
        )
        if tx is not None
        else None,
    )
