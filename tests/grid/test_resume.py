"""Grid services survive a restart of evflex.

An operator redeploying evflex during an FCR activation must not lose the service,
nor curtail twice: the limits evflex left at the stations (still valid) are taken
over with their meter-before baselines, and the service resumes with the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from evflex.app import App
from evflex.config import Settings
from evflex.sim import Fleet
from tests.grid.rig import PROFILE_BASE, fleet_config, post_hz, sim_w, wait_charging


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def evflex(db: str, ocpp_port: int) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    app = App(
        Settings(
            db=db,
            ocpp_port=ocpp_port,
            http_port=0,
            allow_unknown_stations=True,
            telemetry_provisioning=False,
            grid_stale_after_s=2.0,
            grid_tick_s=0.2,
            grid_profile_id_base=PROFILE_BASE,
            grid_resume_grace_s=15.0,
        )
    )
    await app.start()
    try:
        token = await app.repository.create_token("admin", "tests")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{app.ports.http}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ) as http:
            yield app, http
    finally:
        await app.stop()


@contextlib.asynccontextmanager
async def feeding(http: httpx.AsyncClient, hz: float) -> AsyncIterator[None]:
    async def run() -> None:
        while True:
            await post_hz(http, hz)
            await asyncio.sleep(0.2)  # the feed's cadence

    await post_hz(http, hz, 3)
    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(app: App, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    changed = asyncio.Event()

    def wake(_: Any = None) -> None:
        changed.set()

    app.hub.subscribe(wake)
    app.grid.listeners.append(wake)
    try:
        deadline = time.monotonic() + timeout_s
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)
    finally:
        app.hub.unsubscribe(wake)
        app.grid.listeners.remove(wake)


async def test_a_crash_mid_activation_resumes_the_service_without_curtailing_twice(
    tmp_path: Path,
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/evflex.db"
    port = _free_port()
    csms = f"ws://127.0.0.1:{port}/ocpp"
    async with Fleet(fleet_config(csms)) as fleet:
        async with evflex(db, port) as (app, http), feeding(http, 49.8):
            await wait_charging(fleet)
            total = sim_w(fleet)
            await until(app, lambda: app.fleet.summary().power_w > 0.95 * total, 10, "power")
            bid_w = 0.5 * total
            r = await http.post("/api/v1/services", json={"type": "fcr", "bid_w": bid_w})
            assert r.status_code == 201, r.text
            service_id = r.json()["id"]
            await until(app, lambda: sim_w(fleet) < total - 0.8 * bid_w, 10, "curtailment")
            limits = dict(app.grid.limits)
            assert limits
            await app.grid_store.flush()  # what a crash leaves: the last 1 s save
            # a crash: nothing is released, the stations keep evflex's limits
            app.grid._dispatch = lambda *args, **kwargs: None  # type: ignore[method-assign]
        curtailed = sim_w(fleet)
        assert curtailed < total - 0.8 * bid_w  # still curtailed while evflex is away
        async with evflex(db, port) as (app2, http2), feeding(http2, 49.8):
            await until(app2, lambda: service_id in app2.grid.services, 20, "the service to resume")
            service = app2.grid.services[service_id]
            assert service.active and service.kind == "fcr"
            # the limits left at the stations were taken over with their meter-before
            # baselines: the portfolio baseline is the pre-activation power, not the
            # curtailed power (which would make evflex curtail a second time)
            assert set(limits) <= set(app2.grid.unit_base)
            state = (await http2.get("/api/v1/grid/state")).json()
            assert state["baseline_w"] > curtailed + 0.8 * bid_w
            # once re-allocation has settled, the fleet is curtailed by the bid, once
            ticks = app2.grid.evaluations
            await until(app2, lambda: app2.grid.evaluations > ticks + 40, 10, "evaluations")
            await until(
                app2,
                lambda: abs(sim_w(fleet) - (total - bid_w)) < 0.15 * bid_w,
                10,
                "the fleet at baseline − bid",
            )


async def test_a_service_that_expired_meanwhile_is_not_resumed(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/evflex.db"
    port = _free_port()
    async with evflex(db, port) as (app, _):
        # what the store holds after evflex went down with a setpoint whose end has
        # passed meanwhile (written as the engine's hook writes it)
        past = datetime.now(UTC) - timedelta(minutes=5)
        app.grid_store.service(
            {
                "id": "svc-expired0001",
                "kind": "setpoint",
                "request": json.dumps(
                    {"type": "setpoint", "target_w": 0, "until": past.isoformat()}
                ),
                "started_at": past - timedelta(minutes=10),
                "stopped_at": None,
            }
        )
        await app.grid_store.flush()
    async with evflex(db, port) as (app2, _):
        task = app2._resume_task
        assert task is not None
        await asyncio.wait_for(task, 20)
        assert "svc-expired0001" not in app2.grid.services
        await app2.grid_store.flush()
        rows, _ = await app2.grid_store.load()
        assert rows == []  # marked stopped, not tried again at the next start
