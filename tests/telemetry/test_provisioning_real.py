"""Acceptance tests of issue #4 with real sockets: evflex server ↔ simulated stations."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from typing import Any

from conftest import rig
from typer.testing import CliRunner

from evflex.cli import app as cli_app
from evflex.fleet.commands import ChargingProfile, SchedulePeriod, SetChargingProfile
from evflex.fleet.events import Event, MeterSampled
from evflex.sim.config16 import DELTA_KEY
from evflex.sim.v201 import V201Station
from evflex.telemetry.policy import Policy
from evflex.telemetry.provisioner import Provisioning

SID = "T-00001"


def _outcomes(p: Provisioning) -> dict[str, str]:
    return {o.item: o.status for o in p.outcomes}


async def _provisioned(r: Any, sid: str = SID) -> Provisioning:
    await r.until(lambda: sid in r.app.telemetry.provisioner.results)
    await r.app.telemetry.provisioner.wait_idle(10)
    return r.app.telemetry.provisioner.results[sid]


async def test_v16_delta_key_accepted_reports_on_change_and_is_idempotent(db_url: str) -> None:
    async with rig(db_url, "ac16@Home 7") as r:
        p = await _provisioned(r)
        assert p.error is None
        out = _outcomes(p)
        assert out[DELTA_KEY] == "Accepted"
        assert out["MeterValueSampleInterval"] == "Accepted"
        assert out["MeterValuesSampledData"] == "InPlace"  # Power was there: nothing sent
        station = r.fleet.station(SID)
        assert station.config.value(DELTA_KEY) == "100"
        assert station.config.value("MeterValueSampleInterval") == "300"
        # it reports on change: change-triggered power samples arrive, verdict ready
        await r.until(lambda: r.readiness(SID).verdict == "ready", 15)
        obs = r.app.telemetry.observer.for_station(SID)
        assert sum(o.triggered for o in obs.values()) >= 1
        # reconnect: provisioning runs again, reads, and sends nothing
        runs = r.app.telemetry.provisioner.runs
        station.disconnect()
        await r.until(lambda: r.app.telemetry.provisioner.runs > runs and station.connected, 15)
        await r.app.telemetry.provisioner.wait_idle(10)
        again = r.app.telemetry.provisioner.results[SID]
        assert again is not p
        assert again.writes == 0
        assert set(_outcomes(again).values()) == {"InPlace"}
        # the API and its CSV export
        body = (await r.http.get("/api/v1/readiness")).json()
        assert [(x["station_id"], x["verdict"]) for x in body] == [(SID, "ready")]
        rows = list(csv.reader(io.StringIO((await r.http.get("/api/v1/readiness.csv")).text)))
        assert rows[0][:3] == ["station_id", "verdict", "reasons"] and rows[1][:2] == [SID, "ready"]
        models = (await r.http.get("/api/v1/readiness/models")).json()
        assert models[0]["vendor"] == "Voltaro" and models[0]["share_ready"] == 1.0
        # freshness in the fleet API and as metrics
        fleet = (await r.http.get("/api/v1/fleet")).json()
        assert fleet["freshness"]["evses_charging"] == 1
        age = fleet["freshness"]["power_ages"][0]
        assert age["station_id"] == SID and age["power_age_s"] is not None
        assert 0.0 <= fleet["freshness"]["share_known_within_5s"] <= 1.0
        # delta accepted and provisioned: its value is current however long it holds
        assert r.app.telemetry.change_reporting(SID) == 300.0
        assert fleet["freshness"]["share_current"] == 1.0
        metrics = (await r.http.get("/metrics")).text
        assert 'evflex_fleet_power_fresh_share{within="1s"}' in metrics
        assert 'evflex_fleet_power_fresh_share{within="current"} 1.0' in metrics
        assert 'evflex_telemetry_readiness_stations{verdict="ready"} 1.0' in metrics
        # `evflex readiness` asks the running server
        cli = await asyncio.to_thread(
            CliRunner().invoke,
            cli_app,
            ["readiness", "--url", str(r.http.base_url), "--token", r.token],
        )
        assert cli.exit_code == 0, cli.output
        assert SID in cli.output and "ready 1" in cli.output
        # the provisioning outcome is stored as a station event
        await r.app.recorder.flush()
        events = (await r.http.get(f"/api/v1/stations/{SID}/events")).json()
        assert any(e["kind"] == "telemetry_provisioning" for e in events)


async def test_v16_delta_key_not_supported_is_not_ready_naming_the_key(db_url: str) -> None:
    async with rig(db_url, "ac16@Wallbox 11") as r:
        p = await _provisioned(r)
        assert _outcomes(p)[DELTA_KEY] == "NotSupported"
        verdict = r.readiness(SID)
        assert verdict.verdict == "not_ready"
        assert f"delta:NotSupported:{DELTA_KEY}" in verdict.reasons
        assert r.app.telemetry.change_reporting(SID) is None  # only a fresh value is current
        models = (await r.http.get("/api/v1/readiness/models", params={"format": "csv"})).text
        assert "Nordwatt,Wallbox 11,1.9.3,1,0.0,0,0,1,0" in models
        assert DELTA_KEY in models


async def test_v201_delta_monitor_notify_event_updates_fleet_power_within_1s(db_url: str) -> None:
    seen: list[tuple[MeterSampled, float | None, float]] = []
    async with rig(db_url, "ac201@Home 11 Pro") as r:

        def sink(event: Event) -> None:  # subscribed after fleet state: sees its result
            if isinstance(event, MeterSampled) and event.values[0].context == "Trigger":
                evse = r.app.fleet.station(SID).evse(event.evse_id)
                seen.append((event, evse.power_w, r.fleet.station(SID).power_w))

        r.app.hub.subscribe(sink)
        p = await _provisioned(r)
        assert {o.status for o in p.outcomes} == {"Accepted"}
        sim = r.fleet.station(SID)
        assert isinstance(sim, V201Station)
        monitors = {
            (m.type, m.value, m.severity, m.transaction) for m in sim.monitors.monitors.values()
        }
        assert monitors == {("Delta", 100.0, 8, True), ("Periodic", 300.0, 8, True)}
        # the EV charges at a steady power: a station-wide 7 kW limit makes it change
        await r.until(lambda: (r.app.fleet.station(SID).evse(1).power_w or 0) > 7_500, 15)
        before = len(seen)
        limit = ChargingProfile(1, 0, "station_max", "W", (SchedulePeriod(0, 7_000.0),))
        answer = await r.app.gateway.send(SID, SetChargingProfile(0, limit))
        assert answer.status == "Accepted"
        limited_at = datetime.now(UTC)
        await r.until(lambda: 0 < (r.app.fleet.station(SID).evse(1).power_w or 0) <= 7_100, 5)
        alert = next(e for e, _, _ in seen[before:] if e.values[0].value <= 7_100)
        # the station applies the limit at its next control step (≤ 1 s), measures it at
        # the next tick (≤ 1 s) and forwards the Delta alert at once
        assert (alert.received_at - limited_at).total_seconds() < 3.0
        for event, fleet_power, sim_power in seen:
            # fleet power is the reported value the moment the frame is handled ...
            assert fleet_power == event.values[0].value
            # ... the station's live power is within the delta of it ...
            assert abs(sim_power - event.values[0].value) < 100.0
            # ... and the frame came within 1 s of measuring (+1 s for whole-second stamps)
            assert (event.received_at - event.at).total_seconds() < 2.0
        await r.until(lambda: r.readiness(SID).verdict == "ready", 10)
        # the alerts are in the time series too, with the station's and our timestamps
        await r.app.recorder.flush()
        rows = (await r.http.get(f"/api/v1/stations/{SID}/meter-values")).json()
        stored = [x for x in rows if x["context"] == "Trigger"]
        assert {x["measurand"] for x in stored} == {"Power.Active.Import"}
        by_value = {x["value"] for x in stored}
        assert alert.values[0].value in by_value
        assert all(x["ts"] and x["received_at"] and x["unit"] == "W" for x in stored)


async def test_v201_accepted_monitors_that_never_report_are_downgraded(db_url: str) -> None:
    def mute(fleet: Any) -> None:  # firmware that accepts monitors but never fires them
        fleet.station("Q-00001").monitors.level = -1

    groups = {"quick": {"stations": ["Q-*"], "delta_w": 100, "periodic_s": 2}}
    async with rig(
        db_url, "ac201@Home 11 Pro", stations=2, prefix="Q-", prepare=mute, telemetry_groups=groups
    ) as r:
        await _provisioned(r, "Q-00001")
        await _provisioned(r, "Q-00002")
        for sid in ("Q-00001", "Q-00002"):
            assert all(o.ok for o in r.app.telemetry.provisioner.results[sid].outcomes)
            assert r.app.telemetry.provisioner.results[sid].targets.group == "quick"
        await r.until(lambda: r.readiness("Q-00001").verdict == "not_ready", 15)
        assert "observed:no_reports_while_charging" in r.readiness("Q-00001").reasons
        # the same model that does report is ready
        await r.until(lambda: r.readiness("Q-00002").verdict == "ready", 10)


async def test_policy_change_clears_and_resets_monitors(db_url: str) -> None:
    async with rig(db_url, "ac201@Home 11 Pro") as r:
        first = await _provisioned(r)
        sim = r.fleet.station(SID)
        assert isinstance(sim, V201Station)
        old_ids = set(sim.monitors.monitors)
        assert sorted(first.monitor_ids) == sorted(old_ids)
        await r.app.telemetry.provisioner.set_policy(Policy(delta_w=200, periodic_s=60))
        await r.until(lambda: r.app.telemetry.provisioner.results[SID] is not first)
        await r.app.telemetry.provisioner.wait_idle(10)
        second = r.app.telemetry.provisioner.results[SID]
        assert not old_ids & set(sim.monitors.monitors)  # N06: the old ones are gone
        values = {(m.type, m.value) for m in sim.monitors.monitors.values()}
        assert values == {("Delta", 200.0), ("Periodic", 60.0)}
        assert any(o.requirement == "cleanup" and o.status == "Accepted" for o in second.outcomes)
        # unchanged policy: read, nothing re-sent
        await r.app.telemetry.provisioner.set_policy(Policy(delta_w=200, periodic_s=60))
        await r.until(lambda: r.app.telemetry.provisioner.results[SID] is not second)
        await r.app.telemetry.provisioner.wait_idle(10)
        third = r.app.telemetry.provisioner.results[SID]
        assert third.writes == 0 and {o.status for o in third.outcomes} == {"InPlace"}
        # withdrawn from the fleet: our monitors are cleared before it goes
        assert (await r.http.delete(f"/api/v1/stations/{SID}")).status_code == 204
        assert sim.monitors.monitors == {}


async def test_v201_without_monitoring_gets_the_sampled_data_fallback(db_url: str) -> None:
    async with rig(db_url, "ac201@AC Duo") as r:
        p = await _provisioned(r)
        out = _outcomes(p)
        assert out["EVSE.1.Power.Delta"] == "CallError:NotSupported"
        assert out["SampledDataCtrlr.TxUpdatedInterval"] == "Accepted"
        sim = r.fleet.station(SID)
        assert isinstance(sim, V201Station)
        assert sim.device.int("SampledDataCtrlr", "TxUpdatedInterval") == 300
        assert "Power.Active.Import" in sim.device.members(
            "SampledDataCtrlr", "TxUpdatedMeasurands"
        )
        verdict = r.readiness(SID)
        assert verdict.verdict == "not_ready"
        assert "delta:CallError:NotSupported:EVSE.Power.Delta" in verdict.reasons
