"""Response shapes of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class StationIn(BaseModel):
    id: str = Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9*\-_=+|@.]+$")
    password: str | None = Field(
        None,
        min_length=16,
        max_length=40,
        description="Basic-auth password (16–40 chars); omitted = one is generated and returned",
    )


class StationCreated(BaseModel):
    id: str
    password: str | None = Field(None, description="only when evflex generated it; shown once")


class BulkCreated(BaseModel):
    created: int


class TransactionOut(BaseModel):
    transaction_id: str
    started_at: datetime
    id_token: str | None
    meter_start_wh: float | None
    seq_gaps: int = 0
    offline_events: int = 0


class EvseOut(BaseModel):
    evse_id: int
    status: str
    status_at: datetime | None
    power_w: float | None
    power_measured_at: datetime | None
    power_age_s: float | None = Field(
        None, description="age of the power value (now − station's measurement time)"
    )
    energy_wh: float | None
    soc_pct: float | None
    transaction: TransactionOut | None


class StationSummary(BaseModel):
    id: str
    connected: bool
    protocol: str | None
    vendor: str | None
    model: str | None
    firmware: str | None
    last_seen: datetime | None


class StationOut(StationSummary):
    serial: str | None
    booted_at: datetime | None
    connected_at: datetime | None
    evses: list[EvseOut]


class FleetOut(BaseModel):
    stations_known: int
    stations_connected: int
    evses_charging: int
    power_w: float
    connections_by_protocol: dict[str, int]
    freshness: FreshnessOut | None = None


class EvseAgeOut(BaseModel):
    station_id: str
    evse_id: int
    power_age_s: float | None


class FreshnessOut(BaseModel):
    evses_charging: int
    share_known_within_1s: float = Field(description="charging EVSEs with power ≤ 1 s old")
    share_known_within_5s: float
    share_current: float = Field(
        description="charging EVSEs whose power is current: reported ≤ 1 s ago, or the "
        "station forwards changes ≥ its delta within 1 s and its periodic report is not overdue"
    )
    power_ages: list[EvseAgeOut] = Field(description="per charging EVSE")


class ReadinessOut(BaseModel):
    station_id: str
    verdict: str = Field(description="ready | partial | not_ready | unknown")
    reasons: list[str] = Field(description="machine-readable requirement:cause[:item]")
    vendor: str | None
    model: str | None
    firmware: str | None
    protocol: str | None


class ReasonCount(BaseModel):
    reason: str
    stations: int


class ModelReadinessOut(BaseModel):
    vendor: str | None
    model: str | None
    firmware: str | None
    stations: int
    share_ready: float
    verdicts: dict[str, int]
    top_reasons: list[ReasonCount]
    grid_response: dict[str, Any] | None = Field(
        None,
        description="what this model did with evflex's grid limits: sent, accepted, "
        "rejected, fallbacks by form, moved, non_responding, response delays (s)",
    )


class CommandOut(BaseModel):
    status: str | None = Field(description="the station's status field, e.g. Accepted")
    response: dict[str, Any]
    duration_ms: float


class BroadcastOut(BaseModel):
    stations: int
    by_status: dict[str, int] = Field(description="station status answers and error reasons")
    duration_ms: float = Field(description="first send to last answer")
    errors: dict[str, str] = Field(description="station id → error, first 100")
