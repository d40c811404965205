"""OCPP 2.0.1 TransactionEvent and MeterValues; fleet aggregates checked after each step."""

from __future__ import annotations

import asyncio
from typing import Any

from harness import V201, Station201, running_gateway, ts
from ocpp.v201 import call

from evflex.fleet import commands as c
from evflex.fleet.events import MeterSampled, TransactionStarted, TransactionStopped
from evflex.fleet.model import EvseStatus
from evflex.ocpp import txids


def sv(
    value: float, measurand: str, unit: str, multiplier: int = 0, **extra: Any
) -> dict[str, Any]:
    uom: dict[str, Any] = {"unit": unit}
    if multiplier:
        uom["multiplier"] = multiplier
    return {"value": value, "measurand": measurand, "unit_of_measure": uom, **extra}


def tx_event(
    event_type: str,
    seq_no: int,
    *,
    tx: str = "TX-1",
    at: float = 0.0,
    charging_state: str | None = None,
    evse: int | None = 1,
    id_token: str | None = None,
    values: list[dict[str, Any]] | None = None,
    offline: bool | None = None,
    trigger: str = "Authorized",
    stopped_reason: str | None = None,
) -> call.TransactionEvent:
    info: dict[str, Any] = {"transaction_id": tx}
    if charging_state is not None:
        info["charging_state"] = charging_state
    if stopped_reason is not None:
        info["stopped_reason"] = stopped_reason
    return call.TransactionEvent(
        event_type=event_type,
        timestamp=ts(at),
        trigger_reason=trigger,
        seq_no=seq_no,
        transaction_info=info,
        meter_value=[{"timestamp": ts(at), "sampled_value": values}] if values else None,
        offline=offline,
        evse={"id": evse, "connector_id": 1} if evse is not None else None,
        id_token={"id_token": id_token, "type": "ISO14443"} if id_token else None,
    )


async def test_started_updated_ended_with_aggregates_after_each_step() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        await cs.call(
            call.StatusNotification(
                timestamp=ts(), connector_status="Occupied", evse_id=1, connector_id=1
            )
        )
        h.assert_fleet(connected=1, charging=0, power_w=0.0)

        started = await cs.call(
            tx_event(
                "Started",
                0,
                charging_state="EVConnected",
                id_token="TAG-1",
                values=[sv(1.0, "Energy.Active.Import.Register", "kWh")],
            )
        )
        assert started.id_token_info == {"status": "Accepted"}
        evse = h.fleet.stations["CS"].evses[1]
        assert evse.transaction is not None
        tx = evse.transaction
        assert (tx.transaction_id, tx.id_token, tx.meter_start_wh) == ("TX-1", "TAG-1", 1000.0)
        assert txids.TX201_JSON["TX-1"] == b'"TX-1"'  # ready for limit frames
        assert evse.status is EvseStatus.OCCUPIED
        h.assert_fleet(connected=1, charging=0, power_w=0.0)

        updated = await cs.call(
            tx_event("Updated", 1, charging_state="Charging", trigger="ChargingStateChanged")
        )
        assert updated.id_token_info is None
        assert evse.status is EvseStatus.CHARGING
        h.assert_fleet(connected=1, charging=1, power_w=0.0)

        await cs.call(
            tx_event(
                "Updated",
                2,
                at=1,
                trigger="MeterValuePeriodic",
                values=[sv(7.5, "Power.Active.Import", "kW")],
            )
        )
        assert evse.power_w == 7500.0
        h.assert_fleet(connected=1, charging=1, power_w=7500.0)

        await cs.call(
            tx_event(
                "Updated",
                3,
                at=2,
                trigger="MeterValuePeriodic",
                values=[sv(11, "Power.Active.Import", "W", multiplier=3)],
            )
        )
        assert evse.power_w == 11000.0
        h.assert_fleet(connected=1, charging=1, power_w=11000.0)
        assert (tx.seq_gaps, tx.last_seq_no, tx.offline_events) == (0, 3, 0)

        ended = await cs.call(
            tx_event(
                "Ended",
                4,
                at=3,
                evse=None,  # optional after the first event: found by transaction id
                trigger="EVCommunicationLost",
                stopped_reason="EVDisconnected",
                values=[sv(12.5, "Energy.Active.Import.Register", "kWh")],
            )
        )
        assert ended.id_token_info is None
        stop = h.of_type(TransactionStopped)[-1]
        assert (stop.transaction_id, stop.meter_stop_wh, stop.reason, stop.seq_no) == (
            "TX-1",
            12500.0,
            "EVDisconnected",
            4,
        )
        assert (tx.stopped_at, tx.meter_stop_wh) == (stop.at, 12500.0)
        assert evse.transaction is None
        assert evse.status is EvseStatus.FINISHING
        assert evse.energy_wh == 12500.0
        h.assert_fleet(connected=1, charging=0, power_w=0.0)


async def test_seq_no_gap_is_counted() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        await cs.call(tx_event("Started", 0, charging_state="Charging"))
        await cs.call(tx_event("Updated", 1))
        tx = h.fleet.stations["CS"].evses[1].transaction
        assert tx is not None
        assert (tx.seq_gaps, tx.last_seq_no) == (0, 1)
        await cs.call(tx_event("Updated", 4))  # 2 and 3 were lost
        assert (tx.seq_gaps, tx.last_seq_no) == (2, 4)
        await cs.call(tx_event("Updated", 3))  # a late one: not a new gap
        assert (tx.seq_gaps, tx.last_seq_no) == (2, 4)
        await cs.call(tx_event("Updated", 5))
        assert (tx.seq_gaps, tx.last_seq_no) == (2, 5)


async def test_offline_events_do_not_overwrite_newer_live_state() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        await cs.call(tx_event("Started", 0, at=-120, charging_state="Charging"))
        await cs.call(tx_event("Updated", 1, values=[sv(7000, "Power.Active.Import", "W")]))
        h.assert_fleet(connected=1, charging=1, power_w=7000.0)
        evse = h.fleet.stations["CS"].evses[1]

        # queued while the station was offline: older than what we know
        await cs.call(
            tx_event(
                "Updated",
                2,
                at=-60,
                offline=True,
                charging_state="SuspendedEV",
                values=[sv(3000, "Power.Active.Import", "W")],
            )
        )
        sample = h.of_type(MeterSampled)[-1]
        assert sample.values[0].value == 3000.0  # received and reported ...
        assert evse.power_w == 7000.0  # ... but it does not overwrite live power
        assert evse.status is EvseStatus.CHARGING  # nor the live charging state
        assert evse.transaction is not None and evse.transaction.offline_events == 1
        h.assert_fleet(connected=1, charging=1, power_w=7000.0)

        await cs.call(tx_event("Updated", 3, at=1, values=[sv(6000, "Power.Active.Import", "W")]))
        assert evse.power_w == 6000.0
        h.assert_fleet(connected=1, charging=1, power_w=6000.0)


async def test_updated_without_a_seen_start_creates_the_transaction() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        await cs.call(tx_event("Updated", 7, tx="LATE", evse=2, charging_state="Charging"))
        evse = h.fleet.stations["CS"].evses[2]
        assert evse.transaction is not None
        assert (evse.transaction.transaction_id, evse.transaction.last_seq_no) == ("LATE", 7)
        assert h.of_type(TransactionStarted) == []
        h.assert_fleet(connected=1, charging=1, power_w=0.0)


async def test_meter_values_per_phase_export_and_main_meter() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:

        async def meter_values(evse_id: int, values: list[dict[str, Any]], at: float) -> None:
            await cs.call(
                call.MeterValues(
                    evse_id=evse_id, meter_value=[{"timestamp": ts(at), "sampled_value": values}]
                )
            )

        await meter_values(
            1,
            [
                sv(2.3, "Power.Active.Import", "kW", phase="L1"),
                sv(2.4, "Power.Active.Import", "kW", phase="L2"),
                sv(2500, "Power.Active.Import", "W", phase="L3"),
            ],
            at=0,
        )
        assert h.fleet.stations["CS"].evses[1].power_w == 7200.0
        h.assert_fleet(connected=1, charging=0, power_w=7200.0)

        await meter_values(2, [sv(4, "Power.Active.Export", "kW")], at=0)
        assert h.fleet.stations["CS"].evses[2].power_w == -4000.0
        h.assert_fleet(connected=1, charging=0, power_w=3200.0)

        await meter_values(0, [sv(50, "Power.Active.Import", "kW")], at=0)  # the grid meter
        assert 0 not in h.fleet.stations["CS"].evses
        h.assert_fleet(connected=1, charging=0, power_w=3200.0)

        await meter_values(
            1,
            [sv(5, "Power.Active.Import", "kW"), sv(1, "Power.Active.Export", "kW")],
            at=1,
        )
        assert h.fleet.stations["CS"].evses[1].power_w == 4000.0
        h.assert_fleet(connected=1, charging=0, power_w=0.0)


async def test_blocked_token_in_transaction_event() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        response = await cs.call(tx_event("Started", 0, id_token="BLOCKED"))
        assert response.id_token_info == {"status": "Blocked"}
        assert h.of_type(TransactionStarted)[-1].id_token == "BLOCKED"


async def _two_charging(cs: Station201, power_w: float) -> None:
    await cs.call(tx_event("Started", 0, charging_state="Charging"))
    await cs.call(tx_event("Updated", 1, values=[sv(power_w, "Power.Active.Import", "W")]))


async def test_aggregates_across_versions_and_stations() -> None:
    async with (
        asyncio.timeout(10),
        running_gateway() as h,
        h.station("X", V201) as x,
        h.station("Y", V201) as y,
    ):
        await _two_charging(x, 11000)
        await _two_charging(y, 3680)
        h.assert_fleet(connected=2, charging=2, power_w=14680.0)
        await y.call(tx_event("Ended", 2, at=1, stopped_reason="Local"))
        h.assert_fleet(connected=2, charging=1, power_w=11000.0)


async def test_triggered_status_notification_keeps_evse_charging() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        await _two_charging(cs, 7000)
        h.assert_fleet(connected=1, charging=1, power_w=7000.0)
        _, result = await h.round_trip(
            cs, c.TriggerMessage("StatusNotification", evse_id=1), "TriggerMessage"
        )
        assert result.status == "Accepted"
        # what the station then sends: its connector is (still) Occupied
        await cs.call(
            call.StatusNotification(
                timestamp=ts(1), connector_status="Occupied", evse_id=1, connector_id=1
            )
        )
        assert h.fleet.stations["CS"].evses[1].status is EvseStatus.CHARGING
        h.assert_fleet(connected=1, charging=1, power_w=7000.0)
