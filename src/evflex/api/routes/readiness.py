"""Hardware readiness for grid-grade telemetry, per station and per hardware model."""

from __future__ import annotations

import csv
import io
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response

from evflex.api.deps import ReadinessSource, RoleDep, ServicesDep
from evflex.api.schemas import ModelReadinessOut, ReadinessOut, ReasonCount
from evflex.control.response import model_key

router = APIRouter(prefix="/api/v1", tags=["readiness"])
Format = Literal["json", "csv"]


def _source(svc: ServicesDep) -> ReadinessSource:
    if svc.telemetry is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "telemetry is not enabled")
    return svc.telemetry


def _stations(svc: ServicesDep) -> list[ReadinessOut]:
    return [
        ReadinessOut(
            station_id=r.station_id,
            verdict=r.verdict,
            reasons=list(r.reasons),
            vendor=r.vendor,
            model=r.model,
            firmware=r.firmware,
            protocol=r.protocol,
        )
        for r in _source(svc).readiness()
    ]


def _models(svc: ServicesDep) -> list[ModelReadinessOut]:
    return [
        ModelReadinessOut(
            vendor=m.vendor,
            model=m.model,
            firmware=m.firmware,
            stations=m.stations,
            share_ready=round(m.share_ready, 4),
            verdicts=dict(m.verdicts),
            top_reasons=[ReasonCount(reason=r, stations=n) for r, n in m.top_reasons()],
            grid_response=_grid_response(svc, m.vendor, m.model, m.firmware),
        )
        for m in _source(svc).models()
    ]


def _grid_response(
    svc: ServicesDep, vendor: str | None, model: str | None, firmware: str | None
) -> dict[str, object] | None:
    if svc.grid is None:
        return None
    stats = svc.grid.models.get(model_key(vendor, model, firmware))
    return None if stats is None else stats.as_dict(svc.grid.config.response)


def _csv(header: list[str], rows: list[list[object]], name: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _stations_csv(items: list[ReadinessOut]) -> Response:
    return _csv(
        ["station_id", "verdict", "reasons", "vendor", "model", "firmware", "protocol"],
        [
            [
                r.station_id,
                r.verdict,
                ";".join(r.reasons),
                r.vendor,
                r.model,
                r.firmware,
                r.protocol,
            ]
            for r in items
        ],
        "readiness.csv",
    )


def _models_csv(items: list[ModelReadinessOut]) -> Response:
    return _csv(
        ["vendor", "model", "firmware", "stations", "share_ready", "ready", "partial",
         "not_ready", "unknown", "top_reasons"],
        [
            [m.vendor, m.model, m.firmware, m.stations, m.share_ready,
             *(m.verdicts.get(v, 0) for v in ("ready", "partial", "not_ready", "unknown")),
             ";".join(f"{r.reason}={r.stations}" for r in m.top_reasons)]
            for m in items
        ],
        "readiness-models.csv",
    )  # fmt: skip


@router.get("/readiness", response_model=list[ReadinessOut])
async def readiness(
    svc: ServicesDep, _: RoleDep, format: Format = Query("json")
) -> list[ReadinessOut] | Response:
    """Per station: verdict (ready | partial | not_ready | unknown) and reasons."""
    items = _stations(svc)
    return _stations_csv(items) if format == "csv" else items


@router.get("/readiness.csv", response_class=Response)
async def readiness_csv(svc: ServicesDep, _: RoleDep) -> Response:
    return _stations_csv(_stations(svc))


@router.get("/readiness/models", response_model=list[ModelReadinessOut])
async def readiness_models(
    svc: ServicesDep, _: RoleDep, format: Format = Query("json")
) -> list[ModelReadinessOut] | Response:
    """Per vendor/model/firmware: stations, share ready, most common reasons."""
    items = _models(svc)
    return _models_csv(items) if format == "csv" else items


@router.get("/readiness/models.csv", response_class=Response)
async def readiness_models_csv(svc: ServicesDep, _: RoleDep) -> Response:
    return _models_csv(_models(svc))
