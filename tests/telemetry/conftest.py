"""A real evflex server (App) on loopback plus simulated stations of chosen models."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from evflex.app import App
from evflex.config import Settings
from evflex.sim import Fleet, FleetConfig, SessionConfig, SessionMode, station_ids
from evflex.telemetry.readiness import StationReadiness

PASSWORD = "telemetry-test-password-01"


@dataclass
class Rig:
    app: App
    fleet: Fleet
    http: httpx.AsyncClient
    token: str

    def readiness(self, sid: str) -> StationReadiness:
        return next(r for r in self.app.telemetry.readiness() if r.station_id == sid)

    async def until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait for `condition`, re-checked after every simulator tick round (1 s)."""
        assert await self.fleet.wait_until(condition, timeout_s), "condition not met in time"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/evflex.db"


@asynccontextmanager
async def rig(
    db_url: str,
    mix: str,
    *,
    stations: int = 1,
    prefix: str = "T-",
    prepare: Callable[[Fleet], None] | None = None,
    **settings: Any,
) -> AsyncIterator[Rig]:
    app = App(Settings(db=db_url, ocpp_port=0, http_port=0, log_level="WARNING", **settings))
    await app.start()
    try:
        config = FleetConfig(
            csms=f"ws://127.0.0.1:{app.ports.ocpp}/ocpp",
            stations=stations,
            mix=mix,
            prefix=prefix,
            password=PASSWORD,
            sessions=SessionConfig(mode=SessionMode.ALL, speed=20.0),
        )
        await app.registry.register_many([(sid, PASSWORD) for sid in station_ids(config)])
        token = await app.repository.create_token("admin", "tests")
        fleet = Fleet(config)
        await fleet.start()
        if prepare is not None:
            prepare(fleet)
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{app.ports.http}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            ) as http:
                assert await fleet.wait_booted(timeout_s=10)
                yield Rig(app, fleet, http, token)
        finally:
            await fleet.stop()
    finally:
        await app.stop()
