"""Grid services: frequency in, services on/off, live state, 1 s records and audit."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, status
from fastapi.responses import Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator

from evflex.api.deps import RoleDep, ServicesDep
from evflex.control.ffr import FfrParams
from evflex.control.loop import ActiveService, Engine, Fcr, ServiceKind, ServiceParams
from evflex.control.services import DroopCurve, Setpoint
from evflex.grid.push import PushSource
from evflex.grid.samples import FrequencySample

router = APIRouter(prefix="/api/v1", tags=["grid"])
RECORD_COLUMNS = ("ts", "freq_hz", "feed", "delta_w", "target_w", "measured_w", "baseline_w")
MIN_HZ, MAX_HZ = 47.0, 53.0


class FrequencyIn(BaseModel):
    hz: float = Field(ge=MIN_HZ, le=MAX_HZ, description="grid frequency, Hz (plausible: 47–53)")
    ts: datetime | None = Field(None, description="measurement time (ISO 8601); omitted = now")

    @field_validator("ts")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # naive means UTC, as in grid.replay
        return value

    def sample(self) -> FrequencySample:
        return FrequencySample(self.ts.timestamp() if self.ts else time.time(), self.hz)


class FrequencyOut(BaseModel):
    accepted: int
    rejected: int = Field(description="not newer than the last accepted sample (ignored)")


class FcrIn(BaseModel):
    type: Literal["fcr"]
    bid_w: float = Field(gt=0, le=1e10, description="full activation at ±full_dev_hz, W")
    deadband_hz: float = Field(0.010, ge=0, le=0.5)
    full_dev_hz: float = Field(0.200, gt=0, le=1.0)


class SetpointIn(BaseModel):
    type: Literal["setpoint"]
    target_w: float = Field(ge=-1e10, le=1e10, description="portfolio power target, W")
    until: datetime = Field(description="end of validity (ISO 8601, in the future)")


class DroopIn(BaseModel):
    type: Literal["droop_curve"]
    points: list[tuple[float, float]] = Field(
        min_length=2, max_length=100, description="[[f_hz, ΔP_w], ...], f increasing"
    )


class FfrIn(BaseModel):
    type: Literal["ffr"]
    capacity_w: float = Field(gt=0, le=1e10)
    trigger_hz: float = Field(49.7, description="49.7, 49.6 or 49.5")
    support_s: float = Field(5.0, description="5 or 30")
    rearm_s: float = Field(900.0, ge=0)


ServiceIn = Annotated[FcrIn | SetpointIn | DroopIn | FfrIn, Field(discriminator="type")]


class RecordOut(BaseModel):
    rows: int
    last_target_w: float | None = None
    last_measured_w: float | None = None


class ServiceOut(BaseModel):
    id: str
    type: str
    active: bool
    started_at: datetime
    stopped_at: datetime | None
    baseline_w: float
    delta_w: float
    params: dict[str, Any]
    ffr_phase: str | None = None
    record: RecordOut


class FeedOut(BaseModel):
    status: str
    ok: bool
    reason: str
    last_hz: float | None
    last_ts: datetime | None


class FlexOut(BaseModel):
    up_w: float
    down_w: float
    down_hard_w: float
    p90_down_w: float
    p90_up_w: float


class GridStateOut(BaseModel):
    frequency_hz: float | None
    feed: FeedOut
    services: list[ServiceOut]
    baseline_w: float | None
    delta_w: float
    target_w: float | None
    measured_w: float
    limits_in_force: int
    flexibility: FlexOut


class AuditOut(BaseModel):
    at: datetime
    services: list[str]
    station_id: str
    evse_id: int
    action: str
    reason: str
    limit_w: float | None
    outcome: str
    detail: str | None


def _engine(svc: ServicesDep) -> Engine:
    if svc.grid is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "grid services are not enabled")
    return svc.grid


def _push(svc: ServicesDep) -> PushSource:
    if svc.frequency is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no HTTP frequency feed")
    return svc.frequency


def _params(body: FcrIn | SetpointIn | DroopIn | FfrIn) -> tuple[ServiceKind, ServiceParams]:
    """The engine's parameters; their own validation errors become 422 with the reason."""
    try:
        if isinstance(body, FcrIn):
            return "fcr", Fcr(body.bid_w, body.deadband_hz, body.full_dev_hz)
        if isinstance(body, SetpointIn):
            until = body.until if body.until.tzinfo else body.until.replace(tzinfo=UTC)
            return "setpoint", Setpoint(body.target_w, time.time(), until.timestamp())
        if isinstance(body, DroopIn):
            return "droop_curve", DroopCurve(tuple((f, p) for f, p in body.points))
        return "ffr", FfrParams(body.capacity_w, body.trigger_hz, body.support_s, body.rearm_s)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


_SERVICE_IN: TypeAdapter[FcrIn | SetpointIn | DroopIn | FfrIn] = TypeAdapter(ServiceIn)


def service_request(kind: ServiceKind, params: ServiceParams) -> dict[str, Any]:
    """A service as the API body that starts it (kept to resume it after a restart)."""
    return {"type": kind, **_params_dict(params)}


def service_from_request(request: dict[str, Any]) -> tuple[ServiceKind, ServiceParams]:
    """The inverse of `service_request`; ValueError when it is no longer valid."""
    try:
        return _params(_SERVICE_IN.validate_python(request))
    except HTTPException as exc:
        raise ValueError(str(exc.detail)) from None
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


def _params_dict(p: ServiceParams) -> dict[str, Any]:
    if isinstance(p, Fcr):
        return {"bid_w": p.bid_w, "deadband_hz": p.deadband_hz, "full_dev_hz": p.full_dev_hz}
    if isinstance(p, Setpoint):
        return {
            "target_w": p.target_w,
            "until": datetime.fromtimestamp(p.valid_to_ts, UTC).isoformat(),
        }
    if isinstance(p, DroopCurve):
        return {"points": [list(pt) for pt in p.points]}
    return {
        "capacity_w": p.capacity_w,
        "trigger_hz": p.trigger_hz,
        "support_s": p.support_s,
        "rearm_s": p.rearm_s,
    }


def _service_out(s: ActiveService) -> ServiceOut:
    last = s.records[-1] if s.records else None
    return ServiceOut(
        id=s.id,
        type=s.kind,
        active=s.active,
        started_at=s.started_at,
        stopped_at=s.stopped_at,
        baseline_w=s.baseline_w,
        delta_w=s.delta_w,
        params=_params_dict(s.params),
        ffr_phase=s.ffr.phase.value if s.kind == "ffr" else None,
        record=RecordOut(
            rows=len(s.records),
            last_target_w=last.target_w if last else None,
            last_measured_w=last.measured_w if last else None,
        ),
    )


def _service(engine: Engine, service_id: str) -> ActiveService:
    service = engine.services.get(service_id)
    if service is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown service {service_id}")
    return service


@router.post("/grid/frequency", response_model=FrequencyOut)
async def post_frequency(
    svc: ServicesDep,
    _: RoleDep,
    body: Annotated[FrequencyIn | list[FrequencyIn], Body()],
) -> FrequencyOut:
    """One sample `{"hz": 49.8, "ts": "..."}` or a list of them; 422 when implausible."""
    items = body if isinstance(body, list) else [body]
    if not items or len(items) > 10_000:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "send 1–10000 samples")
    samples = [i.sample() for i in items]
    accepted = _push(svc).push_many(samples)
    return FrequencyOut(accepted=accepted, rejected=len(samples) - accepted)


@router.get("/grid/state", response_model=GridStateOut)
async def grid_state(svc: ServicesDep, _: RoleDep) -> GridStateOut:
    st = _engine(svc).state()
    last = st.feed.last
    return GridStateOut(
        frequency_hz=st.freq_hz,
        feed=FeedOut(
            status=st.feed.status.value,
            ok=st.feed.ok,
            reason=st.feed.reason,
            last_hz=last.freq_hz if last else None,
            last_ts=datetime.fromtimestamp(last.ts, UTC) if last else None,
        ),
        services=[_service_out(s) for s in st.services if s.active],
        baseline_w=st.baseline_w,
        delta_w=st.delta_w,
        target_w=st.target_w,
        measured_w=st.measured_w,
        limits_in_force=st.limits,
        flexibility=FlexOut(
            up_w=st.flexibility.up_w,
            down_w=st.flexibility.down_w,
            down_hard_w=st.flexibility.down_hard_w,
            p90_down_w=st.p90_down_w,
            p90_up_w=st.p90_up_w,
        ),
    )


@router.post("/services", response_model=ServiceOut, status_code=status.HTTP_201_CREATED)
async def start_service(svc: ServicesDep, _: RoleDep, body: ServiceIn) -> ServiceOut:
    """Activate a service; the baseline is captured now if no service is active yet."""
    kind, params = _params(body)
    return _service_out(_engine(svc).activate(kind, params))


@router.get("/services", response_model=list[ServiceOut])
async def list_services(svc: ServicesDep, _: RoleDep) -> list[ServiceOut]:
    return [_service_out(s) for s in _engine(svc).services.values()]


@router.get("/services/{service_id}", response_model=ServiceOut)
async def get_service(svc: ServicesDep, _: RoleDep, service_id: str) -> ServiceOut:
    return _service_out(_service(_engine(svc), service_id))


@router.delete("/services/{service_id}", response_model=ServiceOut)
async def stop_service(svc: ServicesDep, _: RoleDep, service_id: str) -> ServiceOut:
    """Deactivate; limits no longer needed are released (ClearChargingProfile)."""
    engine = _engine(svc)
    _service(engine, service_id)
    service = engine.deactivate(service_id)
    assert service is not None
    return _service_out(service)


@router.get("/services/{service_id}/record.csv", response_class=Response)
async def service_record(svc: ServicesDep, _: RoleDep, service_id: str) -> Response:
    """1 s rows: ts, frequency, feed status, ΔP, target, measured and baseline power (W)."""
    engine = _engine(svc)
    service = engine.services.get(service_id)
    if service is not None:
        rows = [asdict(r) for r in service.records]
    else:  # an earlier run's service: its rows are in the database
        rows = await svc.grid_records(service_id) if svc.grid_records is not None else []
        if not rows:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown service {service_id}")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(RECORD_COLUMNS)
    for r in rows:
        hz = r["freq_hz"]
        writer.writerow(
            [
                r["ts"].isoformat(),
                "" if hz is None else f"{hz:.4f}",
                r["feed"],
                *(f"{r[c]:.1f}" for c in RECORD_COLUMNS[3:]),
            ]
        )
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{service_id}.csv"'},
    )


UNIT_COLUMNS = ["ts", "station_id", "evse_id", "baseline_w", "target_w", "measured_w"]


@router.get("/services/{service_id}/units.csv", response_class=Response)
async def service_unit_record(svc: ServicesDep, _: RoleDep, service_id: str) -> Response:
    """Per-unit 1 s rows while the service ran: each unit evflex limited, its meter-before
    baseline, evflex's limit on it (empty while it recovers from a release) and its
    measured power (W)."""
    engine = _engine(svc)
    service = engine.services.get(service_id)
    if service is not None:
        start, end = service.started_at, service.stopped_at
    else:
        rows = await svc.grid_records(service_id) if svc.grid_records is not None else []
        if not rows:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown service {service_id}")
        start, end = rows[0]["ts"], rows[-1]["ts"]
    units = await svc.grid_unit_records(start, end) if svc.grid_unit_records is not None else []
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(UNIT_COLUMNS)
    for r in units:
        writer.writerow(
            [
                r["ts"].isoformat(),
                r["station_id"],
                r["evse_id"],
                f"{r['baseline_w']:.1f}",
                *("" if r[c] is None else f"{r[c]:.1f}" for c in ("target_w", "measured_w")),
            ]
        )
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{service_id}-units.csv"'},
    )


@router.get("/services/{service_id}/audit", response_model=list[AuditOut])
async def service_audit(svc: ServicesDep, _: RoleDep, service_id: str) -> list[AuditOut]:
    """Control actions taken while the service was active, with each station's answer."""
    engine = _engine(svc)
    _service(engine, service_id)
    return [
        AuditOut(
            at=e.at,
            services=list(e.services),
            station_id=e.station_id,
            evse_id=e.evse_id,
            action=e.action,
            reason=e.reason,
            limit_w=e.limit_w,
            outcome=e.outcome,
            detail=e.detail,
        )
        for e in engine.audit
        if service_id in e.services
    ]
