"""OCPP 1.6J stations against a recording CSMS stub (every frame schema-validated)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from evflex.sim import Fault, FaultConfig, SessionMode
from tests.sim.conftest import PASSWORD, FleetFactory
from tests.sim.csms_stub import CallErrorReceived, CsmsStub

SID = "SIM-00001"


def ts(offset_s: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat()


def power_values(
    stub: CsmsStub, sid: str = SID, measurand: str = "Power.Active.Import"
) -> list[float]:
    out = []
    for action, p in stub.calls[sid]:
        if action != "MeterValues":
            continue
        for sv in p["meterValue"][0]["sampledValue"]:
            if sv.get("measurand") == measurand:
                out.append(float(sv["value"]))
    return out


def last_power(stub: CsmsStub, sid: str = SID) -> float | None:
    values = power_values(stub, sid)
    return values[-1] if values else None


def profile(purpose: str, limit: float, unit: str = "W", **extra: Any) -> dict[str, Any]:
    schedule = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
    }
    schedule.update(extra.pop("schedule", {}))
    return {
        "chargingProfileId": extra.pop("pid", 1),
        "stackLevel": extra.pop("level", 0),
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {"startSchedule": ts(-1), **schedule},
        **extra,
    }


async def test_boot_status_start_and_one_hertz_meter_values(
    stub: CsmsStub, fleet_on: FleetFactory
) -> None:
    """1.6 §4.2/§4.9/§4.7: BootNotification, StatusNotification per connector, then the
    transaction; MeterValueSampleInterval=1 gives one MeterValues.req a second."""
    async with fleet_on(mix="ac16@Home 7"):
        await stub.wait_for(lambda: len(power_values(stub)) >= 4, 10)
        actions = stub.actions(SID)
        boot = stub.calls[SID][0][1]
        assert actions[0] == "BootNotification"
        assert (boot["chargePointVendor"], boot["chargePointModel"]) == ("Voltaro", "Home 7")
        assert boot["firmwareVersion"] == "2.4.1"
        statuses = [p["status"] for a, p in stub.calls[SID] if a == "StatusNotification"]
        assert statuses[:3] == ["Available", "Available", "Preparing"] and "Charging" in statuses
        assert actions.index("Authorize") < actions.index("StartTransaction")
        mv = stub.last(SID, "MeterValues")
        assert mv["transactionId"] == 1 and mv["connectorId"] == 1
        assert 7000 < last_power(stub) <= 7400  # type: ignore[operator]
        assert CsmsStub.basic_password(stub.conns[SID].authorization) == PASSWORD
        assert stub.conns[SID].version == "ocpp1.6"
    assert not stub.errors


async def test_configuration_and_delta_trigger(stub: CsmsStub, fleet_on: FleetFactory) -> None:
    """PowerBank: "a MeterValues.req ... whenever a configurable change in power has been
    detected" via MeterValuePowerActiveImportDeltaTrigger; no periodic samples when
    MeterValueSampleInterval is 0."""
    async with fleet_on(mix="ac16@Home 7", meter_interval_s=0):
        got = await stub.call(SID, "GetConfiguration", {"key": ["MeterValueSampleInterval", "X"]})
        assert got["configurationKey"][0]["value"] == "0" and got["unknownKey"] == ["X"]
        key = "MeterValuePowerActiveImportDeltaTrigger"
        assert (await stub.call(SID, "ChangeConfiguration", {"key": key, "value": "100"}))[
            "status"
        ] == "Accepted"
        await stub.wait_for(lambda: len(power_values(stub)) >= 1, 5)  # first change: 0 → P
        before = len(power_values(stub))
        answer = await stub.call(
            SID,
            "SetChargingProfile",
            {"connectorId": 1, "csChargingProfiles": profile("TxProfile", 3000)},
        )
        assert answer["status"] == "Accepted"
        await stub.wait_for(lambda: (last_power(stub) or 1e9) < 3100, 5)
        assert len(power_values(stub)) == before + 1  # exactly one: noise stays under 100 W
        contexts = {
            sv["context"]
            for a, p in stub.calls[SID]
            if a == "MeterValues"
            for sv in p["meterValue"][0]["sampledValue"]
        }
        assert contexts == {"Other"}
    assert not stub.errors


async def test_profile_applies_after_delay_and_expires(
    stub: CsmsStub, fleet_on: FleetFactory
) -> None:
    """The CallResult comes at once; the limit takes hold after the response delay; after
    validTo the station is unconstrained again (1.6 §7.7)."""
    from evflex.sim import DelayModel

    async with fleet_on(mix="ac16@Pole 22", delays=DelayModel(2.0, 2.0, 0.0, 2.0)) as fleet:
        await stub.wait_for(lambda: (last_power(stub) or 0) > 10_000, 10)
        started = time.monotonic()
        cp = profile("TxDefaultProfile", 8, "A", validTo=ts(6))
        answer = await stub.call(
            SID, "SetChargingProfile", {"connectorId": 0, "csChargingProfiles": cp}
        )
        assert answer["status"] == "Accepted" and time.monotonic() - started < 0.5
        assert fleet.station(SID).power_w > 10_000  # not yet: the delay
        await stub.wait_for(lambda: (last_power(stub) or 1e9) < 8 * 230 * 3 + 50, 5)
        assert time.monotonic() - started >= 1.5
        await stub.wait_for(lambda: (last_power(stub) or 0) > 10_000, 10)
    assert not stub.errors


async def test_below_six_amps_the_charger_pauses(stub: CsmsStub, fleet_on: FleetFactory) -> None:
    """IEC 61851-1: no PWM signal below 6 A: the charge is suspended (SuspendedEVSE)."""
    async with fleet_on(mix="ac16@Pole 22"):
        await stub.wait_for(lambda: (last_power(stub) or 0) > 10_000, 10)
        cp = profile("TxProfile", 5, "A")
        await stub.call(SID, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": cp})
        await stub.wait_for(lambda: last_power(stub) == 0.0, 5)
        await stub.wait_for(
            lambda: stub.last(SID, "StatusNotification")["status"] == "SuspendedEVSE", 3
        )


async def test_profile_rules_reject_what_the_spec_forbids(
    stub: CsmsStub, fleet_on: FleetFactory
) -> None:
    """1.6 §3.13: ChargePointMaxProfile only on connector 0; a TxProfile needs a transaction
    on its connector; units and stack levels the model supports."""
    async with fleet_on(mix="ac16@Wallbox 11", sessions=SessionMode.NONE):

        async def status(connector: int, cp: dict[str, Any]) -> str:
            body = {"connectorId": connector, "csChargingProfiles": cp}
            return str((await stub.call(SID, "SetChargingProfile", body))["status"])

        assert await status(1, profile("ChargePointMaxProfile", 16, "A")) == "Rejected"
        assert await status(1, profile("TxProfile", 16, "A")) == "Rejected"  # no transaction
        assert await status(0, profile("TxDefaultProfile", 10000, "W")) == "Rejected"  # A only
        assert await status(0, profile("TxDefaultProfile", 16, "A", level=99)) == "Rejected"
        assert await status(0, profile("ChargePointMaxProfile", 16, "A")) == "Accepted"
        clear = await stub.call(SID, "ClearChargingProfile", {"id": 1})
        assert clear["status"] == "Accepted"
        assert (await stub.call(SID, "ClearChargingProfile", {"id": 1}))["status"] == "Unknown"
    assert not stub.errors


async def test_composite_schedule_reports_min_of_max_and_default(
    stub: CsmsStub, fleet_on: FleetFactory
) -> None:
    async with fleet_on(mix="ac16@Pole 22", sessions=SessionMode.NONE):
        cap = profile("ChargePointMaxProfile", 10_000, pid=1)
        low = profile("TxDefaultProfile", 7_000, pid=2, schedule={"duration": 60})
        for cp in (cap, low):
            await stub.call(SID, "SetChargingProfile", {"connectorId": 0, "csChargingProfiles": cp})
        got = await stub.call(SID, "GetCompositeSchedule", {"connectorId": 1, "duration": 300})
        assert got["status"] == "Accepted"
        periods = got["chargingSchedule"]["chargingSchedulePeriod"]
        assert [p["limit"] for p in periods] == [7000.0, 10000.0]
        assert 57 <= periods[1]["startPeriod"] <= 60
    assert not stub.errors


@pytest.mark.parametrize("fault", [Fault.REJECT, Fault.IGNORE, Fault.SLOW, Fault.DROP])
async def test_faulty_chargers(stub: CsmsStub, fleet_on: FleetFactory, fault: Fault) -> None:
    """Field behaviours: reject, accept-but-ignore, late CallResult, dropped connection."""
    faults = FaultConfig({fault: 1.0}, slow_result_s=(1.5, 1.5))
    async with fleet_on(mix="ac16@Pole 22", faults=faults) as fleet:
        await stub.wait_for(lambda: (last_power(stub) or 0) > 10_000, 10)
        body = {"connectorId": 1, "csChargingProfiles": profile("TxProfile", 3000)}
        started = time.monotonic()
        if fault is Fault.DROP:
            with pytest.raises(ConnectionError):
                await stub.call(SID, "SetChargingProfile", body)
            await stub.wait_for(lambda: stub.connects[SID] == 2, 10)
            assert fleet.station(SID).profiles.installed == ()
            return
        answer = await stub.call(SID, "SetChargingProfile", body)
        elapsed = time.monotonic() - started
        if fault is Fault.REJECT:
            assert answer["status"] == "Rejected"
        elif fault is Fault.SLOW:
            assert answer["status"] == "Accepted" and elapsed >= 1.4
        else:
            assert answer["status"] == "Accepted"
            count = len(power_values(stub))
            await stub.wait_for(lambda: len(power_values(stub)) >= count + 3, 6)
            assert (last_power(stub) or 0) > 10_000  # it never followed


async def test_remote_control_and_unknown_actions(stub: CsmsStub, fleet_on: FleetFactory) -> None:
    """RemoteStart/Stop (§5.11, §5.12), TriggerMessage (§5.17), unknown action → NotImplemented."""
    async with fleet_on(mix="ac16@Home 7", sessions=SessionMode.NONE):
        started = await stub.call(
            SID, "RemoteStartTransaction", {"idTag": "APP-1", "connectorId": 1}
        )
        assert started["status"] == "Accepted"
        await stub.wait_for(lambda: "StartTransaction" in stub.actions(SID), 5)
        assert stub.last(SID, "StartTransaction")["idTag"] == "APP-1"
        assert (await stub.call(SID, "RemoteStartTransaction", {"idTag": "X"}))["status"] == (
            "Rejected"
        )  # busy
        tx = 1
        assert (await stub.call(SID, "RemoteStopTransaction", {"transactionId": tx}))["status"] == (
            "Accepted"
        )
        await stub.wait_for(lambda: "StopTransaction" in stub.actions(SID), 5)
        assert stub.last(SID, "StopTransaction")["reason"] == "Remote"
        trigger = {"requestedMessage": "Heartbeat"}
        assert (await stub.call(SID, "TriggerMessage", trigger))["status"] == "Accepted"
        await stub.wait_for(lambda: "Heartbeat" in stub.actions(SID), 5)
        with pytest.raises(CallErrorReceived) as error:
            await stub.call(SID, "FrobnicateWidget", {})
        assert error.value.code == "NotImplemented"
        unlock = await stub.call(SID, "UnlockConnector", {"connectorId": 1})
        assert unlock["status"] == "Unlocked"
        avail = await stub.call(
            SID, "ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}
        )
        assert avail["status"] == "Accepted"
        await stub.wait_for(
            lambda: stub.last(SID, "StatusNotification")["status"] == "Unavailable", 3
        )
    assert not stub.errors


async def test_reset_reboots_with_a_new_boot(stub: CsmsStub, fleet_on: FleetFactory) -> None:
    async with fleet_on(mix="ac16@Pole 22") as fleet:
        await stub.wait_for(lambda: "StartTransaction" in stub.actions(SID), 5)
        assert (await stub.call(SID, "Reset", {"type": "Soft"}))["status"] == "Accepted"
        await stub.wait_for(lambda: stub.actions(SID).count("BootNotification") == 2, 10)
        assert stub.last(SID, "StopTransaction")["reason"] == "SoftReset"
        assert await fleet.wait_booted(timeout_s=5)


async def test_boot_pending_is_retried_after_the_interval(
    stub: CsmsStub, fleet_on: FleetFactory
) -> None:
    """1.6 §4.2: on Pending/Rejected the Charge Point retries after `interval` seconds."""
    stub.boot_status, stub.heartbeat_s = "Pending", 1
    async with fleet_on(mix="ac16", boot=False) as fleet:
        await stub.wait_for(lambda: stub.actions(SID).count("BootNotification") >= 2, 5)
        assert set(stub.actions(SID)) == {"BootNotification"}  # nothing else while pending
        stub.boot_status = "Accepted"
        assert await fleet.wait_booted(timeout_s=5)


async def test_bess_connectors_and_protection(stub: CsmsStub, fleet_on: FleetFactory) -> None:
    """Datasheet: virtual connector 1 = discharge, 2 = charge; MeterValues with SoC and
    temperature; commands outside the protection envelope are refused."""
    async with fleet_on(mix="bess16@Cube 100", sessions=SessionMode.NONE) as fleet:
        bess = fleet.station(SID)
        assert bess.battery is not None
        bess.battery.soc = 0.04  # below its discharge floor
        refused = await stub.call(SID, "RemoteStartTransaction", {"idTag": "EMS", "connectorId": 1})
        assert refused["status"] == "Rejected"
        charge = await stub.call(SID, "RemoteStartTransaction", {"idTag": "EMS", "connectorId": 2})
        assert charge["status"] == "Accepted"
        await stub.wait_for(lambda: (last_power(stub) or 0) > 90_000, 5)
        mv = stub.last(SID, "MeterValues")
        measurands = {sv["measurand"] for sv in mv["meterValue"][0]["sampledValue"]}
        assert {"SoC", "Temperature", "Voltage"} <= measurands
        assert mv["connectorId"] == 2
        cap = profile("TxDefaultProfile", 500_000, pid=3)
        await stub.call(SID, "SetChargingProfile", {"connectorId": 2, "csChargingProfiles": cap})
        await stub.wait_for(lambda: len(power_values(stub)) >= 3, 5)
        assert (last_power(stub) or 0) <= 100_020  # clipped to its rating
        assert "DataTransfer" in stub.actions(SID)  # SoH has no 1.6 measurand
    assert not stub.errors


async def test_offline_transaction_messages_are_queued_and_sent_on_reconnect(
    stub: CsmsStub, fleet_on: FleetFactory
) -> None:
    """1.6 §3.x/§4.7: transaction-related messages (MeterValues with a transactionId) are
    kept while offline and delivered, in order, after reconnecting."""
    async with fleet_on(mix="ac16@Home 7") as fleet:
        await stub.wait_for(lambda: len(power_values(stub)) >= 2, 5)
        station = fleet.station(SID)
        station._backoff = 2  # reconnect after 2-6 s, so that samples pile up offline
        stub.conns[SID].transport.disconnect()  # type: ignore[union-attr]
        assert await fleet.wait_until(lambda: not station.connected, 5)
        lost_at = int(time.time())
        assert await fleet.wait_until(lambda: len(station._queue) >= 2, 5)
        await stub.wait_for(lambda: stub.connects[SID] == 2, 15)
        back_at = time.time()

        def stamps() -> list[float]:
            return [
                datetime.fromisoformat(p["meterValue"][0]["timestamp"]).timestamp()
                for a, p in stub.calls[SID]
                if a == "MeterValues"
            ]

        await stub.wait_for(lambda: sum(lost_at <= t < back_at - 1 for t in stamps()) >= 2, 5)
        assert stamps() == sorted(stamps())
    assert not stub.errors


async def test_heartbeat_at_the_interval_the_csms_gives(
    stub: CsmsStub, fleet_on: FleetFactory
) -> None:
    """1.6 §4.6: the interval in BootNotification.conf sets the heartbeat period."""
    stub.heartbeat_s = 1
    async with fleet_on(mix="ac16", sessions=SessionMode.NONE):
        await stub.wait_for(lambda: stub.actions(SID).count("Heartbeat") >= 2, 5)
        got = await stub.call(SID, "GetConfiguration", {"key": ["HeartbeatInterval"]})
        assert got["configurationKey"][0]["value"] == "1"


async def test_an_accelerated_day_brings_arrivals_and_departures(
    stub: CsmsStub, fleet_on: FleetFactory
) -> None:
    """`--speed`: driver time runs faster; sessions start and end by the daily profile."""
    from evflex.sim import SessionConfig

    fast = SessionConfig(SessionMode.PROFILE, "public", speed=20_000.0)
    async with fleet_on(mix="ac16@Home 7", sessions=fast):
        await stub.wait_for(lambda: "StopTransaction" in stub.actions(SID), 15)
        stop = stub.last(SID, "StopTransaction")
        assert stop["reason"] == "EVDisconnected"
        await stub.wait_for(lambda: stub.actions(SID).count("StartTransaction") >= 2, 15)
    assert not stub.errors


async def test_observer_hooks_and_snapshot(stub: CsmsStub, fleet_on: FleetFactory) -> None:
    """The Python API lets a demo or test watch each station: events, counters, power."""
    from evflex.sim import SimEvent

    seen: list[SimEvent] = []
    async with fleet_on(mix="ac16@Pole 22", observer=seen.append) as fleet:
        await stub.wait_for(lambda: len(power_values(stub)) >= 1, 5)
        body = {"connectorId": 0, "csChargingProfiles": profile("TxDefaultProfile", 16, "A")}
        await stub.call(SID, "SetChargingProfile", body)
        assert await fleet.wait_until(lambda: any(e.kind == "applied" for e in seen), 5)
        kinds = [e.kind for e in seen]
        for kind in ("connected", "booted", "tx_started", "call", "applied"):
            assert kind in kinds
        snap = fleet.snapshot()[0]
        assert snap["station_id"] == SID and snap["model"] == "Pole 22" and snap["booted"]
        assert snap["profiles_received"] == 1 and snap["messages_sent"] > 3
        assert snap["evses"][0]["limit_w"] == 16 * 230 * 3
        figures = fleet.figures()
        assert figures["stations"] == 1 and figures["profiles_received"] == 1
