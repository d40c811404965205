"""FCR end to end over real sockets: a step to 49.8 Hz, deadband, stale feed, DELETE.

The rig (evflex on loopback + a simulated fleet, event-driven waits) is in rig.py.
"""

from __future__ import annotations

import time

import pytest

from evflex.sim.schedule import Purpose
from tests.grid.rig import STALE_S, Rig, curtail, feeding, start_fcr


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
