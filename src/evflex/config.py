"""Settings: defaults that run with zero configuration, then a TOML file, then EVFLEX_* env.

Precedence (highest first): command-line options (applied by cli.py), environment
variables `EVFLEX_<FIELD>`, the TOML file (`--config`, `EVFLEX_CONFIG`, or
`./evflex.toml` when present), defaults. Only app.py and cli.py read settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from evflex.control.units import BessSpec, EvseSpec

DEFAULT_DB = "sqlite+aiosqlite:///./evflex.db"
_toml_path: Path | None = None


class TelemetryGroup(BaseModel):
    """Stations whose id matches one of `stations` (glob patterns) get this policy."""

    model_config = SettingsConfigDict(extra="forbid")

    stations: list[str] = Field(min_length=1)
    delta_w: int = Field(gt=0)
    periodic_s: int = Field(gt=0)


class BessConfig(BaseModel):
    capacity_wh: float = Field(gt=0)
    max_charge_w: float = Field(gt=0)
    max_discharge_w: float = Field(gt=0)
    soc_min_pct: float = Field(10.0, ge=0, le=100)
    soc_max_pct: float = Field(90.0, ge=0, le=100)

    @model_validator(mode="after")
    def _window(self) -> BessConfig:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        return self


class HardwareSpec(BaseModel):
    """A hardware model's capabilities for grid allocation (inventory, per vendor/model)."""

    max_power_w: float = Field(11_040.0, gt=0)
    phases: int = Field(3, ge=1, le=3)
    voltage_v: float = Field(230.0, gt=0)
    ac: bool = True
    min_current_a: float = Field(6.0, ge=0)
    max_discharge_w: float = Field(0.0, ge=0, description="> 0: bidirectional (V2G) EVSEs")
    bess: BessConfig | None = None

    def to_spec(self) -> EvseSpec:
        bess = None
        if self.bess is not None:
            b = self.bess
            bess = BessSpec(
                b.capacity_wh, b.max_charge_w, b.max_discharge_w, b.soc_min_pct, b.soc_max_pct
            )
        return EvseSpec(
            self.max_power_w,
            self.phases,
            self.voltage_v,
            self.ac,
            self.min_current_a,
            self.max_discharge_w,
            bess,
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVFLEX_", extra="forbid")

    host: str = Field("127.0.0.1", description="address both servers bind to")
    ocpp_port: int = Field(8180, ge=0, le=65535, description="OCPP WebSocket port")
    http_port: int = Field(8080, ge=0, le=65535, description="REST API / metrics port")
    db: str = Field(
        DEFAULT_DB, description="SQLAlchemy async URL: sqlite+aiosqlite / postgresql+asyncpg"
    )
    allow_unknown_stations: bool = Field(
        False, description="DEVELOPMENT ONLY: register unknown stations on first connect"
    )
    heartbeat_interval_s: int = Field(300, ge=1, description="interval sent in BootNotification")
    call_timeout_s: float = Field(30.0, gt=0, description="response timeout for CSMS→station calls")
    max_message_bytes: int = Field(256 * 1024, ge=1024, description="larger frames are refused")
    flush_interval_s: float = Field(
        0.25, gt=0, le=1.0, description="telemetry batch interval (durable within 1 s)"
    )
    live_values_interval_s: float = Field(
        10.0, ge=0, description="how often an EVSE's latest meter values are upserted"
    )
    gc_freeze_interval_s: float = Field(
        10.0, ge=0, description="freeze long-lived objects out of the GC (0 = off); see app.py"
    )
    telemetry_provisioning: bool = Field(
        True, description="provision grid-grade power telemetry on every boot/reconnect"
    )
    telemetry_delta_w: int = Field(
        100, gt=0, description="report power changes of this many W within 1 s"
    )
    telemetry_periodic_s: int = Field(
        300, gt=0, description="and report power at least every this many seconds"
    )
    telemetry_groups: dict[str, TelemetryGroup] = Field(
        default_factory=dict, description="per station group overrides (first match wins)"
    )
    telemetry_concurrency: int = Field(
        200, ge=1, description="stations provisioned at the same time"
    )
    telemetry_rate_per_s: float = Field(
        400.0, ge=0, description="provisioning runs started per second at most (0 = unpaced)"
    )
    grid_stack_level: int = Field(
        8, ge=0, le=99, description="stack level of evflex's grid limits (above everyday ones)"
    )
    grid_profile_id_base: int = Field(
        880_000, ge=1, description="evflex's grid limit on EVSE e uses profile id base + e"
    )
    grid_valid_for_s: float = Field(
        900.0, ge=60, description="grid limits expire by themselves after this (renewed)"
    )
    grid_stale_after_s: float = Field(
        3.0, gt=0, description="frequency feed is stale (limits released) after this silence"
    )
    grid_tick_s: float = Field(1.0, gt=0, le=5, description="grid engine tick and record interval")
    grid_threshold_w: float = Field(
        200.0, ge=0, description="smaller changes of a grid limit are not sent"
    )
    grid_response_delay_s: float = Field(
        6.0,
        gt=0,
        le=60,
        description="how long a charger of a not yet observed model may take to follow an "
        "accepted limit before it is marked non-responding and others compensate (s); "
        "learned per model once observed",
    )
    grid_response_hold_s: float = Field(
        900.0, gt=0, description="how long a non-responding unit is left out before a retry (s)"
    )
    grid_resume_grace_s: float = Field(
        20.0,
        ge=0,
        le=600,
        description="after a restart, wait this long at most for the stations under "
        "evflex's limits to reconnect before resuming the active grid services (s)",
    )
    grid_model_specs: dict[str, HardwareSpec] = Field(
        default_factory=dict,
        description='per hardware model, keyed "Vendor/Model": power rating, phases, V2G, '
        "BESS limits; EVSEs of unlisted models are taken as 11 kW AC, 3 x 16 A",
    )
    grid_mqtt_host: str | None = Field(None, description="MQTT broker for frequency (optional)")
    grid_mqtt_port: int = Field(1883, ge=1, le=65535)
    grid_mqtt_topic: str = Field("evflex/grid/frequency")
    log_level: str = Field("INFO")
    log_format: Literal["console", "json"] = Field("console")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_path or _default_toml()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


def _default_toml() -> Path | None:
    env = os.environ.get("EVFLEX_CONFIG")
    if env:
        return Path(env)
    local = Path("evflex.toml")
    return local if local.is_file() else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; `overrides` are explicit CLI options (None values are ignored)."""
    global _toml_path
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} not found")
    _toml_path = config_file
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _toml_path = None
