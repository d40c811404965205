"""FCR end to end over real sockets: evflex (App on loopback) + a simulated fleet.

Frequency goes in through `POST /api/v1/grid/frequency`, services through
`/api/v1/services`; the assertions read what the simulated stations received and
draw, and what evflex measured. Waits are on events (fleet-state events, engine
evaluations, simulator changes), each bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from evflex.sim import DelayModel, Fleet, FleetConfig, SessionConfig, SessionMode
from evflex.sim.schedule import Profile, Purpose
from tests.api.conftest import Server, running_server

STATIONS = 10
PROFILE_BASE = 880_000
STALE_S = 1.0


@dataclass
class Rig:
    server: Server
    fleet: Fleet
    changed: asyncio.Event

    @property
    def api(self) -> httpx.AsyncClient:
        return self.server.http

    async def until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait for `condition`, re-checked on every fleet event and engine evaluation."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    def measured_w(self) -> float:
        return self.server.app.fleet.summary().power_w

    def sim_w(self) -> float:
        return sum(s.power_w for s in self.fleet.stations)

    def grid_profiles(self) -> list[Profile]:
        return [
            p
            for s in self.fleet.stations
            for p in s.profiles.installed
            if p.profile_id >= PROFILE_BASE
        ]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db = f"sqlite+aiosqlite:///{tmp_path}/evflex.db"
    async with running_server(
        db,
        allow_unknown_stations=True,
        telemetry_provisioning=False,
        grid_stale_after_s=STALE_S,
        grid_tick_s=0.2,
        grid_profile_id_base=PROFILE_BASE,
    ) as server:
        changed = asyncio.Event()
        server.app.hub.subscribe(lambda _ev: changed.set())
        server.app.grid.listeners.append(changed.set)
        config = FleetConfig(
            csms=server.ocpp_url,
            stations=STATIONS,
            mix="ac16@Home 7:1,ac201@Home 11 Pro:1",
            password="grid-e2e-password-01",
            sessions=SessionConfig(SessionMode.ALL, opt_out_share=0.0),
            meter_interval_s=1,
            delays=DelayModel(0.2, 0.5, 0.0, 0.5),
        )
        async with Fleet(config) as fleet:
            rig = Rig(server, fleet, changed)
            assert await fleet.wait_booted(timeout_s=10)
            assert await fleet.wait_until(lambda: all(s.power_w > 0 for s in fleet.stations), 10)
            total = rig.sim_w()
            await rig.until(
                lambda: rig.measured_w() > 0.95 * total, 10, "evflex to measure the fleet"
            )
            await rig.until(
                lambda: all(
                    e.transaction is not None
                    for st in server.app.fleet.stations.values()
                    for e in st.evses.values()
                    if (e.power_w or 0) > 0
                ),
                10,
                "transactions known to evflex",
            )
            yield rig


async def post_hz(api: httpx.AsyncClient, hz: float, n: int = 1) -> None:
    """`n` samples ending now, 10 ms apart (the feed needs 3 good ones to be usable)."""
    now = datetime.now(UTC)
    body = [
        {"hz": hz, "ts": (now - timedelta(milliseconds=10 * (n - 1 - i))).isoformat()}
        for i in range(n)
    ]
    r = await api.post("/api/v1/grid/frequency", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == n


@contextlib.asynccontextmanager
async def feeding(api: httpx.AsyncClient, hz: float) -> AsyncIterator[None]:
    """Keep the feed alive at `hz` (one sample per 0.2 s) while the block runs."""

    async def feed() -> None:
        while True:
            await post_hz(api, hz)
            await asyncio.sleep(0.2)  # the feed's cadence, not a synchronisation

    await post_hz(api, hz, 3)
    task = asyncio.create_task(feed())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def start_fcr(rig: Rig, bid_w: float) -> str:
    r = await rig.api.post("/api/v1/services", json={"type": "fcr", "bid_w": bid_w})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def curtail(rig: Rig, bid_w: float) -> float:
    """Start FCR, hold 49.8 Hz until the fleet has dropped by the bid; returns the baseline."""
    before = rig.measured_w()
    await start_fcr(rig, bid_w)
    await rig.until(lambda: rig.sim_w() < before - 0.8 * bid_w, 10, "the fleet to curtail")
    await rig.until(
        lambda: rig.measured_w() < before - 0.8 * bid_w, 10, "evflex to measure the drop"
    )
    return before


async def test_fcr_under_frequency_curtails_by_the_bid_with_expiring_profiles(rig: Rig) -> None:
    before = rig.measured_w()
    bid = 0.5 * before
    async with feeding(rig.api, 49.8):
        service_id = await start_fcr(rig, bid)
        target = before - bid
        tolerance = max(0.1 * before, 4_200.0)  # AC units move in steps of ≥ 6 A
        await rig.until(lambda: abs(rig.sim_w() - target) < tolerance, 10, "sim at the target")
        await rig.until(
            lambda: abs(rig.measured_w() - target) < tolerance, 10, "evflex measures the target"
        )
        profiles = rig.grid_profiles()
        assert profiles, "no station received evflex's grid profile"
        now = time.time()
        for p in profiles:
            assert p.valid_to is not None and now + 800 < p.valid_to < now + 920
            assert (p.stack_level, p.amps, p.purpose) == (8, False, Purpose.TX)
        state = (await rig.api.get("/api/v1/grid/state")).json()
        assert state["feed"]["ok"] and state["frequency_hz"] == pytest.approx(49.8)
        assert state["baseline_w"] == pytest.approx(before, rel=0.05)  # captured at activation
        assert state["target_w"] == pytest.approx(state["baseline_w"] - bid, rel=1e-6)
        assert state["limits_in_force"] == len(profiles)
        audit = (await rig.api.get(f"/api/v1/services/{service_id}/audit")).json()
        assert audit and {a["outcome"] for a in audit} == {"Accepted"}
        await rig.until(
            lambda: len(rig.server.app.grid.services[service_id].records) >= 3, 5, "records"
        )
        csv_text = (await rig.api.get(f"/api/v1/services/{service_id}/record.csv")).text
        header, *rows = csv_text.strip().splitlines()
        assert header == "ts,freq_hz,feed,delta_w,target_w,measured_w,baseline_w"
        assert rows and rows[-1].split(",")[1] == "49.8000"
    store = rig.server.app.grid_store
    assert await store.flush()
    stored = await store.records(service_id)
    assert len(stored) >= 3 and stored[-1]["freq_hz"] == pytest.approx(49.8)
    assert any(r["outcome"] == "Accepted" for r in await store.audit_rows())


async def test_within_deadband_nothing_is_sent(rig: Rig) -> None:
    engine = rig.server.app.grid
    received = rig.fleet.stats.profiles_received
    async with feeding(rig.api, 50.0):
        await start_fcr(rig, 0.5 * rig.measured_w())
        await rig.until(lambda: engine.health.ok, 5, "a usable feed")
        evaluations = 0

        def count() -> None:
            nonlocal evaluations
            evaluations += 1

        engine.listeners.append(count)
        await rig.until(lambda: evaluations >= 10, 5, "ten evaluations at 50.0 Hz")
    assert engine.limits == {}
    assert list(engine.audit) == []
    assert rig.fleet.stats.profiles_received == received


async def test_stale_feed_releases_the_curtailment(rig: Rig) -> None:
    engine = rig.server.app.grid
    async with feeding(rig.api, 49.8):
        before = await curtail(rig, 0.5 * rig.measured_w())
        assert engine.limits
    # the feed stops: after STALE_S evflex must release everything by itself
    await rig.until(lambda: not engine.limits, STALE_S + 3, "release on a stale feed")
    assert engine.health.status.value == "stale"
    await rig.until(lambda: not rig.grid_profiles(), 5, "profiles cleared at the stations")
    await rig.until(lambda: rig.sim_w() > 0.9 * before, 10, "the fleet back to its power")
    releases = [a for a in engine.audit if a.action == "release"]
    assert releases and all("stale" in a.reason for a in releases)


async def test_delete_releases_with_clear_charging_profile(rig: Rig) -> None:
    engine = rig.server.app.grid
    async with feeding(rig.api, 49.8):
        before = await curtail(rig, 0.5 * rig.measured_w())
        service_id = next(iter(engine.services))
        r = await rig.api.delete(f"/api/v1/services/{service_id}")
        assert r.status_code == 200 and r.json()["active"] is False
        assert not engine.limits
        await rig.until(lambda: not rig.grid_profiles(), 5, "profiles cleared at the stations")
        await rig.until(lambda: rig.sim_w() > 0.9 * before, 10, "the fleet back to its power")
    audit = (await rig.api.get(f"/api/v1/services/{service_id}/audit")).json()
    releases = [a for a in audit if a["action"] == "release"]
    assert releases and all(a["reason"] == f"deactivate {service_id}" for a in releases)
