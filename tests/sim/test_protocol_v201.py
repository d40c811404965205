"""OCPP 2.0.1 stations against a recording CSMS stub (every frame schema-validated)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from evflex.sim import SessionMode
from tests.sim.conftest import FleetFactory
from tests.sim.csms_stub import CallErrorReceived, CsmsStub

SID = "SIM-00001"
EVSE_POWER = {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}}


def ts(offset_s: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat()


def events(stub: CsmsStub, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        p for a, p in stub.calls[SID] if a == "TransactionEvent" and kind in (None, p["eventType"])
    ]


def sampled(p: dict[str, Any], measurand: str) -> float | None:
    for mv in p.get("meterValue", []):
        for sv in mv["sampledValue"]:
            if sv.get("measurand") == measurand:
                return float(sv["value"])
    return None


def last_sampled(stub: CsmsStub, measurand: str) -> float | None:
    values = [sampled(p, measurand) for p in events(stub, "Updated")]
    present = [v for v in values if v is not None]
    return present[-1] if present else None


def notify_events(stub: CsmsStub) -> list[dict[str, Any]]:
    return [e for a, p in stub.calls[SID] if a == "NotifyEvent" for e in p["eventData"]]


def tx_id(stub: CsmsStub) -> str:
    return str(events(stub, "Started")[0]["transactionInfo"]["transactionId"])


def profile(purpose: str, limit: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": extra.pop("pid", 1),
        "stackLevel": extra.pop("level", 0),
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [
            {
                "id": 1,
                "startSchedule": ts(-1),
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            }
        ],
        **extra,
    }


async def test_transaction_events_carry_seq_no_and_meter_values(
    stub: CsmsStub, fleet_on: FleetFactory
) -> None:
    """E01-E07: TransactionEvent Started/Updated/Ended with seqNo counting from 0; Updated
    every TxUpdatedInterval with the TxUpdatedMeasurands."""
    async with fleet_on(mix="ac201@Home 11 Pro"):
        await stub.wait_for(lambda: len(events(stub, "Updated")) >= 3, 10)
        boot = stub.calls[SID][0][1]
        assert boot["chargingStation"] == {
            "model": "Home 11 Pro",
            "vendorName": "Voltaro",
            "firmwareVersion": "3.1.0",
            "serialNumber": SID,
        }
        seqs = [p["seqNo"] for p in events(stub)]
        assert seqs == list(range(len(seqs)))
        assert events(stub)[0]["eventType"] == "Started"
        assert 10_000 < (last_sampled(stub, "Power.Active.Import") or 0) <= 11_100
        stop = await stub.call(SID, "RequestStopTransaction", {"transactionId": tx_id(stub)})
        assert stop["status"] == "Accepted"
        await stub.wait_for(lambda: bool(events(stub, "Ended")), 5)
        ended = events(stub, "Ended")[0]
        assert ended["transactionInfo"]["stoppedReason"] == "Remote"
        assert ended["triggerReason"] == "RemoteStop"
    assert not stub.errors


async def test_delta_and_periodic_monitors_raise_notify_event(
    stub: CsmsStub, fleet_on: FleetFactory
) -> None:
    """PowerBank for 2.0.1: N04 Delta and Periodic monitors on EVSE Power → NotifyEvent
    (N07/N08); N02 report; N06 clear."""
    async with fleet_on(mix="ac201@Home 11 Pro", meter_interval_s=0):
        await stub.wait_for(lambda: bool(events(stub, "Started")), 5)
        items = [
            {"type": "Delta", "value": 100, "severity": 5, **EVSE_POWER},
            {"type": "Periodic", "value": 2, "severity": 8, **EVSE_POWER},
        ]
        got = await stub.call(SID, "SetVariableMonitoring", {"setMonitoringData": items})
        results = got["setMonitoringResult"]
        assert [r["status"] for r in results] == ["Accepted", "Accepted"]
        await stub.wait_for(
            lambda: sum(e["trigger"] == "Periodic" for e in notify_events(stub)) >= 2, 6
        )
        cap = {"evseId": 0, "chargingProfile": profile("TxDefaultProfile", 4000, validTo=ts(60))}
        assert (await stub.call(SID, "SetChargingProfile", cap))["status"] == "Accepted"
        await stub.wait_for(lambda: any(e["trigger"] == "Delta" for e in notify_events(stub)), 5)
        await stub.wait_for(
            lambda: any(
                e["trigger"] == "Delta" and float(e["actualValue"]) < 4100
                for e in notify_events(stub)
            ),
            5,
        )
        delta = notify_events(stub)[-1]
        assert delta["variableMonitoringId"] == results[0]["id"]
        assert delta["component"] == EVSE_POWER["component"]
        report = await stub.call(SID, "GetMonitoringReport", {"requestId": 7})
        assert report["status"] == "Accepted"
        await stub.wait_for(lambda: "NotifyMonitoringReport" in stub.actions(SID), 5)
        monitors = stub.last(SID, "NotifyMonitoringReport")["monitor"][0]["variableMonitoring"]
        assert {m["type"] for m in monitors} == {"Delta", "Periodic"}
        ids = [r["id"] for r in results]
        cleared = await stub.call(SID, "ClearVariableMonitoring", {"id": ids})
        assert [c["status"] for c in cleared["clearMonitoringResult"]] == ["Accepted", "Accepted"]
    assert not stub.errors


async def test_a_model_without_monitoring_says_so(stub: CsmsStub, fleet_on: FleetFactory) -> None:
    async with fleet_on(mix="ac201@AC Duo", sessions=SessionMode.NONE):
        items = [{"type": "Delta", "value": 100, "severity": 5, **EVSE_POWER}]
        with pytest.raises(CallErrorReceived) as error:
            await stub.call(SID, "SetVariableMonitoring", {"setMonitoringData": items})
        assert error.value.code == "NotSupported"
        report = await stub.call(SID, "GetMonitoringReport", {"requestId": 1})
        assert report["status"] == "NotSupported"
    assert not stub.errors


async def test_sampled_data_ctrlr_and_base_report(stub: CsmsStub, fleet_on: FleetFactory) -> None:
    """B05 SetVariables on SampledDataCtrlr.TxUpdatedInterval changes the cadence; B07
    GetBaseReport → NotifyReport parts with seqNo and tbc."""
    async with fleet_on(mix="ac201@Wallbox 22 NG", meter_interval_s=0):
        item = {
            "component": {"name": "SampledDataCtrlr"},
            "variable": {"name": "TxUpdatedInterval"},
            "attributeValue": "1",
        }
        result = await stub.call(SID, "SetVariables", {"setVariableData": [item]})
        assert result["setVariableResult"][0]["attributeStatus"] == "Accepted"
        await stub.wait_for(lambda: len(events(stub, "Updated")) >= 2, 6)
        got = await stub.call(
            SID,
            "GetVariables",
            {
                "getVariableData": [
                    {
                        "component": {"name": "SampledDataCtrlr"},
                        "variable": {"name": "TxUpdatedInterval"},
                    }
                ]
            },
        )
        assert got["getVariableResult"][0]["attributeValue"] == "1"
        assert (
            await stub.call(SID, "GetBaseReport", {"requestId": 3, "reportBase": "FullInventory"})
        )["status"] == "Accepted"
        await stub.wait_for(
            lambda: any(a == "NotifyReport" and not p["tbc"] for a, p in stub.calls[SID]), 5
        )
        parts = [p for a, p in stub.calls[SID] if a == "NotifyReport"]
        assert [p["seqNo"] for p in parts] == list(range(len(parts)))
        assert all(p["requestId"] == 3 for p in parts)
    assert not stub.errors


async def test_v2g_discharges_on_a_negative_limit(stub: CsmsStub, fleet_on: FleetFactory) -> None:
    """Bidirectional DC: a negative TxProfile limit makes the car feed the grid."""
    async with fleet_on(mix="v2g201@BiDi 11") as fleet:
        await stub.wait_for(lambda: bool(events(stub, "Started")), 5)
        ev = fleet.station(SID).evses[0].ev
        assert ev is not None
        ev.soc = 0.8  # above the driver's reserve
        cp = profile("TxProfile", -5000, transactionId=tx_id(stub))
        assert (await stub.call(SID, "SetChargingProfile", {"evseId": 1, "chargingProfile": cp}))[
            "status"
        ] == "Accepted"
        await stub.wait_for(lambda: (last_sampled(stub, "Power.Active.Export") or 0) > 4900, 5)
        assert last_sampled(stub, "Power.Active.Import") == 0.0
        assert fleet.station(SID).power_w < -4900
    assert not stub.errors


async def test_k01_rejects_invalid_profiles(stub: CsmsStub, fleet_on: FleetFactory) -> None:
    """K01.FR.03 (station max on EVSE 0 only; TxProfile needs transactionId), K01.FR.40
    (Absolute needs startSchedule), K01.FR.28 (EVSE must exist)."""
    async with fleet_on(mix="ac201@Home 11 Pro"):
        await stub.wait_for(lambda: bool(events(stub, "Started")), 5)

        async def status(evse: int, cp: dict[str, Any]) -> str:
            body = {"evseId": evse, "chargingProfile": cp}
            return str((await stub.call(SID, "SetChargingProfile", body))["status"])

        assert await status(1, profile("ChargingStationMaxProfile", 5000)) == "Rejected"
        assert await status(1, profile("TxProfile", 5000)) == "Rejected"
        no_start = profile("TxDefaultProfile", 5000)
        del no_start["chargingSchedule"][0]["startSchedule"]
        assert await status(1, no_start) == "Rejected"
        assert await status(9, profile("TxDefaultProfile", 5000)) == "Rejected"
        assert await status(1, profile("TxProfile", 5000, transactionId=tx_id(stub))) == "Accepted"
        got = await stub.call(SID, "GetCompositeSchedule", {"evseId": 1, "duration": 60})
        assert got["status"] == "Accepted"
        assert got["schedule"]["chargingSchedulePeriod"][0]["limit"] == 5000.0
    assert not stub.errors


async def test_offline_events_are_flagged_and_delivered(
    stub: CsmsStub, fleet_on: FleetFactory
) -> None:
    """E04: transaction events generated while offline are sent after reconnecting, with
    offline=true."""
    async with fleet_on(mix="ac201@Home 11 Pro") as fleet:
        await stub.wait_for(lambda: len(events(stub, "Updated")) >= 1, 5)
        station = fleet.station(SID)
        station._backoff = 2  # reconnect after 2-6 s, so that something happens offline
        stub.conns[SID].transport.disconnect()  # type: ignore[union-attr]
        assert await fleet.wait_until(lambda: not station.connected, 5)
        assert await fleet.wait_until(lambda: len(station._queue) >= 1, 5)
        await stub.wait_for(lambda: stub.connects[SID] == 2, 15)
        await stub.wait_for(lambda: any(p.get("offline") for p in events(stub)), 5)
        seqs = [p["seqNo"] for p in events(stub)]
        assert sorted(seqs) == list(range(len(seqs)))  # nothing lost
    assert not stub.errors


async def test_trigger_and_reset(stub: CsmsStub, fleet_on: FleetFactory) -> None:
    async with fleet_on(mix="ac201@Home 11 Pro", sessions=SessionMode.NONE):
        trigger = {"requestedMessage": "StatusNotification"}
        assert (await stub.call(SID, "TriggerMessage", trigger))["status"] == "Accepted"
        boot = {"requestedMessage": "BootNotification"}
        assert (await stub.call(SID, "TriggerMessage", boot))["status"] == "Rejected"
        start = {"idToken": {"idToken": "APP", "type": "Central"}, "remoteStartId": 4, "evseId": 1}
        assert (await stub.call(SID, "RequestStartTransaction", start))["status"] == "Accepted"
        await stub.wait_for(lambda: bool(events(stub, "Started")), 5)
        assert events(stub, "Started")[0]["transactionInfo"]["remoteStartId"] == 4
        assert (await stub.call(SID, "Reset", {"type": "OnIdle"}))["status"] == "Scheduled"
        stop = {"transactionId": tx_id(stub)}
        assert (await stub.call(SID, "RequestStopTransaction", stop))["status"] == "Accepted"
        await stub.wait_for(lambda: stub.actions(SID).count("BootNotification") == 2, 10)
        assert stub.last(SID, "BootNotification")["reason"] == "RemoteReset"
        with pytest.raises(CallErrorReceived) as error:
            await stub.call(SID, "SetDisplayMessage", {"message": {}})
        assert error.value.code == "NotImplemented"
    assert not stub.errors
