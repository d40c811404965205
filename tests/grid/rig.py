"""The grid end-to-end rig: evflex (App on loopback) + a simulated fleet over real sockets.

Frequency goes in through `POST /api/v1/grid/frequency`, services through
`/api/v1/services`; tests read what the simulated stations received and draw, and
what evflex measured. Waits are on events (fleet-state events, engine evaluations,
simulator ticks), each bounded by a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from evflex.sim import DelayModel, Fleet, FleetConfig, SessionConfig, SessionMode
from evflex.sim.schedule import Profile
from tests.api.conftest import Server, running_server

STATIONS = 10
PROFILE_BASE = 880_000
STALE_S = 1.0
MIX = "ac16@Home 7:1,ac201@Home 11 Pro:1"
PASSWORD = "grid-e2e-password-01"
FAST_DELAYS = DelayModel(0.2, 0.5, 0.0, 0.5)  # chargers follow a profile within 0.2–0.5 s
AC_GAP_W = 6.0 * 230.0 * 3  # the allocator's granularity: no AC limit in (0, 6 A · 3 phases)


def fleet_config(csms: str, **overrides: Any) -> FleetConfig:
    """The rig's fleet: every station charging from the start, 1 s meter values."""
    values: dict[str, Any] = {
        "csms": csms,
        "stations": STATIONS,
        "mix": MIX,
        "password": PASSWORD,
        "sessions": SessionConfig(SessionMode.ALL, opt_out_share=0.0),
        "meter_interval_s": 1,
        "delays": FAST_DELAYS,
    }
    values.update(overrides)
    return FleetConfig(**values)


def sim_w(fleet: Fleet) -> float:
    """What the simulated stations draw now (W)."""
    return sum(s.power_w for s in fleet.stations)


def grid_profiles(fleet: Fleet) -> list[Profile]:
    """evflex's grid profiles installed at the simulated stations (expired ones included)."""
    return [p for s in fleet.stations for p in s.profiles.installed if p.profile_id >= PROFILE_BASE]


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
        return sim_w(self.fleet)

    def grid_profiles(self) -> list[Profile]:
        return grid_profiles(self.fleet)

    def limits_applied(self) -> bool:
        """Whether every simulated EVSE follows exactly the limit evflex believes in force."""
        limits = self.server.app.grid.limits
        for st in self.fleet.stations:
            for evse in st.evses:
                want = limits.get((st.station_id, evse.id))
                have = evse.limit.watts
                if (have is None) != (want is None):
                    return False
                if have is not None and want is not None and abs(have - want) > 0.5:
                    return False
        return True

    def commanded_w(self) -> float:
        """Σ (limit − the unit's baseline) over the limits evflex believes in force (W)."""
        engine = self.server.app.grid
        assert engine.baseline is not None, "no baseline: no service active"
        base = {**engine.baseline.power_w, **engine.unit_base}  # meter-before per unit
        return sum(limit - base[key] for key, limit in engine.limits.items())


@contextlib.asynccontextmanager
async def open_rig(tmp_path: Path, **fleet: Any) -> AsyncIterator[Rig]:
    """evflex + a charging fleet, both up and evflex measuring the fleet's power."""
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
        async with Fleet(fleet_config(server.ocpp_url, **fleet)) as sim:
            rig = Rig(server, sim, changed)
            await wait_charging(sim)
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


async def wait_charging(fleet: Fleet) -> None:
    assert await fleet.wait_booted(timeout_s=10), "the fleet did not boot"
    assert await fleet.wait_until(lambda: all(s.power_w > 0 for s in fleet.stations), 10), (
        "not every simulated station is charging"
    )


async def post_hz(api: httpx.AsyncClient, hz: float, n: int = 1) -> float:
    """`n` samples ending now, 10 ms apart (the feed needs 3 good ones to be usable).

    Returns the last sample's timestamp (epoch s).
    """
    now = datetime.now(UTC)
    stamps = [now - timedelta(milliseconds=10 * (n - 1 - i)) for i in range(n)]
    body = [{"hz": hz, "ts": ts.isoformat()} for ts in stamps]
    r = await api.post("/api/v1/grid/frequency", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == n, r.text
    return stamps[-1].timestamp()


class Feed:
    """A live frequency feed: one sample per `period_s` at `hz`; `set` changes it at once.

    Posts are serialised, so sample timestamps always increase (the push source
    ignores a sample that is not newer than the last one).
    """

    def __init__(self, api: httpx.AsyncClient, hz: float, period_s: float = 0.2) -> None:
        self.api, self.hz, self.period_s = api, hz, period_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def set(self, hz: float, n: int = 1) -> float:
        """Post `n` samples at `hz` now and keep feeding it; returns the last sample's ts."""
        async with self._lock:
            self.hz = hz
            return await post_hz(self.api, hz, n)

    async def ramp(self, to_hz: float, step_hz: float = 0.01) -> None:
        """Walk the feed to `to_hz` one sample per `step_hz` (a ramp, not a step)."""
        steps = max(1, round(abs(to_hz - self.hz) / step_hz))
        start = self.hz
        for k in range(1, steps + 1):
            await self.set(round(start + (to_hz - start) * k / steps, 4))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)  # the feed's cadence, not a synchronisation
            async with self._lock:
                await post_hz(self.api, self.hz)

    async def start(self) -> None:
        await self.set(self.hz, 3)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


@contextlib.asynccontextmanager
async def feeding(api: httpx.AsyncClient, hz: float) -> AsyncIterator[Feed]:
    """Keep the feed alive (one sample per 0.2 s) while the block runs."""
    feed = Feed(api, hz)
    await feed.start()
    try:
        yield feed
    finally:
        await feed.stop()


async def start_service(api: httpx.AsyncClient, body: dict[str, Any]) -> str:
    r = await api.post("/api/v1/services", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def start_fcr(rig: Rig, bid_w: float) -> str:
    return await start_service(rig.api, {"type": "fcr", "bid_w": bid_w})


async def curtail(rig: Rig, bid_w: float) -> float:
    """Start FCR, hold 49.8 Hz until the fleet has dropped by the bid; returns the baseline."""
    before = rig.measured_w()
    await start_fcr(rig, bid_w)
    await rig.until(lambda: rig.sim_w() < before - 0.8 * bid_w, 10, "the fleet to curtail")
    await rig.until(
        lambda: rig.measured_w() < before - 0.8 * bid_w, 10, "evflex to measure the drop"
    )
    return before
