"""Every remote command through `gateway.send` to an OCPP 2.0.1 station: the exact frame the
station received (validated by the `ocpp` library against the official schema) and the
CommandResult.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from harness import V201, running_gateway

from evflex.fleet import commands as c
from evflex.fleet.events import CommandCompleted

AT = datetime(2030, 1, 1, 6, 0, tzinfo=UTC)
AT_WIRE = "2030-01-01T06:00:00.000Z"


def profile(purpose: Any, unit: Any, *limits: float, **extra: Any) -> c.ChargingProfile:
    periods = tuple(c.SchedulePeriod(i * 900, limit) for i, limit in enumerate(limits))
    extra.setdefault("start_schedule", AT)
    return c.ChargingProfile(10, 1, purpose, unit, periods, **extra)


def wire_profile(purpose: str, unit: str, *limits: float, **extra: Any) -> dict[str, Any]:
    schedule = {
        "id": 10,
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": i * 900, "limit": limit} for i, limit in enumerate(limits)
        ],
        "startSchedule": AT_WIRE,
        **extra.pop("schedule", {}),
    }
    return {
        "id": 10,
        "stackLevel": 1,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [schedule],
        **extra,
    }


SINGLE_CALL_CASES = [
    pytest.param(
        c.StopTransaction("TX-9"),
        "RequestStopTransaction",
        {"transactionId": "TX-9"},
        "Accepted",
        id="request-stop",
    ),
    pytest.param(c.Reset("soft"), "Reset", {"type": "OnIdle"}, "Accepted", id="reset-soft"),
    pytest.param(c.Reset("hard"), "Reset", {"type": "Immediate"}, "Accepted", id="reset-hard"),
    pytest.param(
        c.UnlockConnector(1, 2),
        "UnlockConnector",
        {"evseId": 1, "connectorId": 2},
        "Unlocked",
        id="unlock",
    ),
    pytest.param(
        c.ChangeAvailability(False, 2),
        "ChangeAvailability",
        {"operationalStatus": "Inoperative", "evse": {"id": 2}},
        "Accepted",
        id="availability-evse",
    ),
    pytest.param(
        c.ChangeAvailability(True),
        "ChangeAvailability",
        {"operationalStatus": "Operative"},
        "Accepted",
        id="availability-station",
    ),
    pytest.param(
        c.GetBaseReport(5, "ConfigurationInventory"),
        "GetBaseReport",
        {"requestId": 5, "reportBase": "ConfigurationInventory"},
        "Accepted",
        id="base-report",
    ),
    pytest.param(
        c.TriggerMessage("MeterValues", evse_id=1),
        "TriggerMessage",
        {"requestedMessage": "MeterValues", "evse": {"id": 1}},
        "Accepted",
        id="trigger",
    ),
    pytest.param(
        c.SetChargingProfile(
            1, profile("tx", "W", 11000, -3000, transaction_id="TX-1", start_schedule=AT)
        ),
        "SetChargingProfile",
        {
            "evseId": 1,
            "chargingProfile": wire_profile(
                "TxProfile",
                "W",
                11000,
                -3000,  # V2G: negative limits ask for discharge
                transactionId="TX-1",
                schedule={"startSchedule": AT_WIRE},
            ),
        },
        "Accepted",
        id="profile-tx-watts",
    ),
    pytest.param(
        c.SetChargingProfile(2, profile("tx_default", "A", 21.4, duration_s=7200)),
        "SetChargingProfile",
        {
            "evseId": 2,
            "chargingProfile": wire_profile(
                "TxDefaultProfile", "A", 21.4, schedule={"duration": 7200}
            ),
        },
        "Accepted",
        id="profile-tx-default-amps",
    ),
    pytest.param(
        c.SetChargingProfile(0, profile("station_max", "W", 50000, valid_to=AT, min_rate=1400)),
        "SetChargingProfile",
        {
            "evseId": 0,
            "chargingProfile": wire_profile(
                "ChargingStationMaxProfile",
                "W",
                50000,
                validTo=AT_WIRE,
                schedule={"minChargingRate": 1400},
            ),
        },
        "Accepted",
        id="profile-station-max",
    ),
    pytest.param(
        c.ClearChargingProfile(profile_id=3),
        "ClearChargingProfile",
        {"chargingProfileId": 3},
        "Accepted",
        id="clear-by-id",
    ),
    pytest.param(
        c.ClearChargingProfile(evse_id=1, purpose="station_max", stack_level=0),
        "ClearChargingProfile",
        {
            "chargingProfileCriteria": {
                "evseId": 1,
                "chargingProfilePurpose": "ChargingStationMaxProfile",
                "stackLevel": 0,
            }
        },
        "Accepted",
        id="clear-by-criteria",
    ),
    pytest.param(
        c.GetCompositeSchedule(1, 600, "A"),
        "GetCompositeSchedule",
        {"evseId": 1, "duration": 600, "chargingRateUnit": "A"},
        "Accepted",
        id="composite-schedule",
    ),
]


@pytest.mark.parametrize(("command", "action", "payload", "status"), SINGLE_CALL_CASES)
async def test_command_round_trip(
    command: c.Command, action: str, payload: dict[str, Any], status: str
) -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        received, result = await h.round_trip(cs, command, action)
        assert received == [payload]
        assert result.status == status
        assert result.response == {"status": status}
        logged = h.of_type(CommandCompleted)
        assert [(e.action, e.request, e.outcome, e.response) for e in logged] == [
            (action, payload, "result", {"status": status})
        ]


async def test_request_start_transaction_gets_fresh_remote_start_ids() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        command = c.StartTransaction("TAG-1", evse_id=1, charging_profile=profile("tx", "W", 7000))
        (first,), result = await h.round_trip(cs, command, "RequestStartTransaction")
        assert result.status == "Accepted"
        assert isinstance(first["remoteStartId"], int)
        assert first == {
            "idToken": {"idToken": "TAG-1", "type": "Central"},
            "remoteStartId": first["remoteStartId"],
            "evseId": 1,
            "chargingProfile": wire_profile("TxProfile", "W", 7000),
        }
        (second,), _ = await h.round_trip(
            cs, c.StartTransaction("TAG-2"), "RequestStartTransaction"
        )
        assert second == {
            "idToken": {"idToken": "TAG-2", "type": "Central"},
            "remoteStartId": second["remoteStartId"],
        }
        assert second["remoteStartId"] != first["remoteStartId"]


async def test_set_variables_is_one_call_with_per_item_results() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        cs.status["var:Interval"] = "RebootRequired"
        command = c.SetVariables(
            (
                c.VariableSet("Enabled", "true", "SmartChargingCtrlr"),
                c.VariableSet("Interval", "60", "AlignedDataCtrlr", evse_id=1),
            )
        )
        (payload,), result = await h.round_trip(cs, command, "SetVariables")
        assert payload == {
            "setVariableData": [
                {
                    "attributeValue": "true",
                    "component": {"name": "SmartChargingCtrlr"},
                    "variable": {"name": "Enabled"},
                },
                {
                    "attributeValue": "60",
                    "component": {"name": "AlignedDataCtrlr", "evse": {"id": 1}},
                    "variable": {"name": "Interval"},
                },
            ]
        }
        assert result.status == "RebootRequired"
        assert [r["attributeStatus"] for r in result.response["setVariableResult"]] == [
            "Accepted",
            "RebootRequired",
        ]


async def test_get_variables() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        command = c.GetVariables((c.VariableRef("HeartbeatInterval", "OCPPCommCtrlr"),))
        (payload,), result = await h.round_trip(cs, command, "GetVariables")
        assert payload == {
            "getVariableData": [
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
            ]
        }
        assert result.status == "Accepted"
        assert result.response["getVariableResult"][0]["attributeValue"] == "42"

        cs.status["GetVariables"] = "UnknownVariable"
        _, result = await h.round_trip(cs, command, "GetVariables")
        assert result.status == "UnknownVariable"


async def test_commands_that_cannot_be_expressed_are_refused_before_sending() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CS", V201) as cs:
        with pytest.raises(c.InvalidCommand):
            await h.gateway.send("CS", c.GetVariables())  # 2.0.1 needs at least one
        with pytest.raises(c.InvalidCommand):
            await h.gateway.send("CS", c.SetVariables((c.VariableSet("Enabled", "true"),)))
        _, result = await h.round_trip(cs, c.Reset(), "Reset")
        assert cs.calls[0][2] == "Reset"  # nothing else was sent before
        assert result.status == "Accepted"
