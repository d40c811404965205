"""Fixtures: a loopback CSMS stub and simulated fleets attached to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from evflex.sim import DelayModel, Fleet, FleetConfig, SessionConfig, SessionMode
from tests.sim.csms_stub import CsmsStub

PASSWORD = "sim-password-0123456789"
FleetFactory = Callable[..., AbstractAsyncContextManager[Fleet]]


@pytest.fixture
async def stub() -> AsyncIterator[CsmsStub]:
    server = CsmsStub(heartbeat_s=300)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def fleet_on(stub: CsmsStub) -> FleetFactory:
    """`async with fleet_on(mix=..., ...) as fleet:` a booted fleet on the stub."""

    @asynccontextmanager
    async def make(
        *,
        sessions: SessionMode | SessionConfig = SessionMode.ALL,
        boot: bool = True,
        **overrides: Any,
    ) -> AsyncIterator[Fleet]:
        settings: dict[str, Any] = {
            "csms": f"ws://127.0.0.1:{stub.port}/ocpp",
            "stations": 1,
            "password": PASSWORD,
            "sessions": sessions
            if isinstance(sessions, SessionConfig)
            else SessionConfig(sessions),
            "meter_interval_s": 1,
            "delays": DelayModel(0.0, 0.0, 0.0, 0.0),
        }
        settings.update(overrides)
        fleet = Fleet(FleetConfig(**settings))
        await fleet.start()
        try:
            if boot:
                assert await fleet.wait_booted(timeout_s=10), "fleet did not boot"
            yield fleet
        finally:
            await fleet.stop()

    return make
