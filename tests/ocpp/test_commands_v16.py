"""Every remote command through `gateway.send` to an OCPP 1.6J station: the exact frame the
station received, its schema validity (the `ocpp` library validates every CALL it is sent,
with Decimal floats for charging schedules) and the CommandResult.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from harness import V16, running_gateway

from evflex.fleet import commands as c
from evflex.fleet.events import CommandCompleted

AT = datetime(2030, 1, 1, 6, 0, tzinfo=UTC)
AT_WIRE = "2030-01-01T06:00:00.000Z"


def profile(purpose: Any, unit: Any, *limits: float, **extra: Any) -> c.ChargingProfile:
    periods = tuple(c.SchedulePeriod(i * 900, limit) for i, limit in enumerate(limits))
    return c.ChargingProfile(10, 1, purpose, unit, periods, **extra)


def wire_periods(*limits: float) -> list[dict[str, Any]]:
    return [{"startPeriod": i * 900, "limit": limit} for i, limit in enumerate(limits)]


SINGLE_CALL_CASES = [
    pytest.param(
        c.StartTransaction("TAG-1", evse_id=2),
        "RemoteStartTransaction",
        {"idTag": "TAG-1", "connectorId": 2},
        "Accepted",
        id="remote-start",
    ),
    pytest.param(
        c.StartTransaction("TAG-1", charging_profile=profile("tx", "A", 16)),
        "RemoteStartTransaction",
        {
            "idTag": "TAG-1",
            "chargingProfile": {
                "chargingProfileId": 10,
                "stackLevel": 1,
                "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": wire_periods(16),
                },
            },
        },
        "Accepted",
        id="remote-start-with-profile",
    ),
    pytest.param(
        c.StopTransaction("17"),
        "RemoteStopTransaction",
        {"transactionId": 17},
        "Accepted",
        id="remote-stop",
    ),
    pytest.param(c.Reset("soft"), "Reset", {"type": "Soft"}, "Accepted", id="reset-soft"),
    pytest.param(c.Reset("hard"), "Reset", {"type": "Hard"}, "Accepted", id="reset-hard"),
    pytest.param(
        c.UnlockConnector(2), "UnlockConnector", {"connectorId": 2}, "Unlocked", id="unlock"
    ),
    pytest.param(
        c.ChangeAvailability(False, 1),
        "ChangeAvailability",
        {"connectorId": 1, "type": "Inoperative"},
        "Accepted",
        id="availability-evse",
    ),
    pytest.param(
        c.ChangeAvailability(True),
        "ChangeAvailability",
        {"connectorId": 0, "type": "Operative"},
        "Accepted",
        id="availability-station",
    ),
    pytest.param(
        c.TriggerMessage("StatusNotification", evse_id=1),
        "TriggerMessage",
        {"requestedMessage": "StatusNotification", "connectorId": 1},
        "Accepted",
        id="trigger",
    ),
    pytest.param(
        c.SetChargingProfile(
            1,
            profile("tx", "W", 11000, 7400, transaction_id="5", duration_s=3600, start_schedule=AT),
        ),
        "SetChargingProfile",
        {
            "connectorId": 1,
            "csChargingProfiles": {
                "chargingProfileId": 10,
                "stackLevel": 1,
                "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Absolute",
                "transactionId": 5,
                "chargingSchedule": {
                    "chargingRateUnit": "W",
                    "chargingSchedulePeriod": wire_periods(11000, 7400),
                    "duration": 3600,
                    "startSchedule": AT_WIRE,
                },
            },
        },
        "Accepted",
        id="profile-tx-watts",
    ),
    pytest.param(
        c.SetChargingProfile(1, profile("tx_default", "A", 21.4, 6.0)),
        "SetChargingProfile",
        {
            "connectorId": 1,
            "csChargingProfiles": {
                "chargingProfileId": 10,
                "stackLevel": 1,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": wire_periods(21.4, 6.0),
                },
            },
        },
        "Accepted",
        id="profile-tx-default-amps-21.4",
    ),
    pytest.param(
        c.SetChargingProfile(
            0,
            profile(
                "station_max",
                "A",
                32.04,  # rounded to the schema's one decimal
                kind="Recurring",
                recurrency="Daily",
                valid_from=AT,
                valid_to=AT.replace(year=2031),
                start_schedule=AT,
                min_rate=6.04,
            ),
        ),
        "SetChargingProfile",
        {
            "connectorId": 0,
            "csChargingProfiles": {
                "chargingProfileId": 10,
                "stackLevel": 1,
                "chargingProfilePurpose": "ChargePointMaxProfile",
                "chargingProfileKind": "Recurring",
                "recurrencyKind": "Daily",
                "validFrom": AT_WIRE,
                "validTo": "2031-01-01T06:00:00.000Z",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": wire_periods(32.0),
                    "startSchedule": AT_WIRE,
                    "minChargingRate": 6.0,
                },
            },
        },
        "Accepted",
        id="profile-station-max-recurring",
    ),
    pytest.param(
        c.ClearChargingProfile(profile_id=3),
        "ClearChargingProfile",
        {"id": 3},
        "Accepted",
        id="clear-by-id",
    ),
    pytest.param(
        c.ClearChargingProfile(evse_id=1, purpose="tx_default", stack_level=2),
        "ClearChargingProfile",
        {"connectorId": 1, "chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 2},
        "Accepted",
        id="clear-by-criteria",
    ),
    pytest.param(
        c.GetCompositeSchedule(1, 3600, "W"),
        "GetCompositeSchedule",
        {"connectorId": 1, "duration": 3600, "chargingRateUnit": "W"},
        "Accepted",
        id="composite-schedule",
    ),
]


@pytest.mark.parametrize(("command", "action", "payload", "status"), SINGLE_CALL_CASES)
async def test_command_round_trip(
    command: c.Command, action: str, payload: dict[str, Any], status: str
) -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        received, result = await h.round_trip(cp, command, action)
        assert received == [payload]
        assert result.status == status
        assert result.response["status"] == status
        assert result.duration_ms >= 0.0
        assert len(cp.calls) == 1
        logged = h.of_type(CommandCompleted)
        assert [(e.action, e.request, e.outcome, e.response) for e in logged] == [
            (action, payload, "result", result.response)
        ]


async def test_limit_21_4_is_written_with_one_decimal() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        command = c.SetChargingProfile(1, profile("tx_default", "A", 21.4))
        await h.round_trip(cp, command, "SetChargingProfile")
        assert '"limit":21.4' in cp.raw_calls[0].replace(" ", "")


@pytest.mark.parametrize(
    ("station_status", "expected"), [("Rejected", "Rejected"), ("NotSupported", "NotSupported")]
)
async def test_station_status_is_the_result_status(station_status: str, expected: str) -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        cp.status["SetChargingProfile"] = station_status
        _, result = await h.round_trip(
            cp, c.SetChargingProfile(1, profile("tx_default", "W", 7000)), "SetChargingProfile"
        )
        assert result.status == expected


async def test_single_key_change_configuration() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        command = c.SetVariables((c.VariableSet("HeartbeatInterval", "60"),))
        received, result = await h.round_trip(cp, command, "ChangeConfiguration")
        assert received == [{"key": "HeartbeatInterval", "value": "60"}]
        assert result.status == "Accepted"
        assert result.response == {
            "results": [{"variable": "HeartbeatInterval", "status": "Accepted"}]
        }
        logged = h.of_type(CommandCompleted)
        assert [(e.action, e.outcome, e.response) for e in logged] == [
            ("ChangeConfiguration", "result", {"status": "Accepted"})
        ]


async def test_multi_key_change_configuration_is_one_call_per_key_in_order() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        cp.status["key:MeterValueSampleInterval"] = "RebootRequired"
        command = c.SetVariables(
            (
                c.VariableSet("HeartbeatInterval", "60"),
                c.VariableSet("MeterValueSampleInterval", "15"),
                c.VariableSet("LocalPreAuthorize", "true"),
            )
        )
        received, result = await h.round_trip(
            cp, command, "ChangeConfiguration", "ChangeConfiguration", "ChangeConfiguration"
        )
        assert received == [
            {"key": "HeartbeatInterval", "value": "60"},
            {"key": "MeterValueSampleInterval", "value": "15"},
            {"key": "LocalPreAuthorize", "value": "true"},
        ]
        assert result.status == "RebootRequired"
        assert result.response == {
            "results": [
                {"variable": "HeartbeatInterval", "status": "Accepted"},
                {"variable": "MeterValueSampleInterval", "status": "RebootRequired"},
                {"variable": "LocalPreAuthorize", "status": "Accepted"},
            ]
        }
        assert cp.max_outstanding == 1
        assert len(h.of_type(CommandCompleted)) == 3


@pytest.mark.parametrize(
    ("command", "payload", "known", "unknown"),
    [
        pytest.param(
            c.GetVariables((c.VariableRef("HeartbeatInterval"), c.VariableRef("Nope"))),
            {"key": ["HeartbeatInterval", "Nope"]},
            ["HeartbeatInterval"],
            ["Nope"],
            id="get-configuration-keys",
        ),
        pytest.param(
            c.GetVariables(),
            {},
            ["HeartbeatInterval", "MeterValueSampleInterval"],
            None,
            id="get-configuration-all",
        ),
        pytest.param(
            c.GetBaseReport(),
            {},
            ["HeartbeatInterval", "MeterValueSampleInterval"],
            None,
            id="base-report-is-full-configuration",
        ),
    ],
)
async def test_get_configuration(
    command: c.Command, payload: dict[str, Any], known: list[str], unknown: list[str] | None
) -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        received, result = await h.round_trip(cp, command, "GetConfiguration")
        assert received == [payload]
        assert result.status is None  # GetConfiguration.conf has no status
        assert [k["key"] for k in result.response["configurationKey"]] == known
        assert result.response.get("unknownKey") == unknown


async def test_commands_that_cannot_be_expressed_are_refused_before_sending() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        with pytest.raises(c.InvalidCommand):
            await h.gateway.send("CP", c.StopTransaction("TX-not-an-integer"))
        with pytest.raises(c.InvalidCommand):
            await h.gateway.send("CP", c.SetVariables(()))
        # a ChangeConfiguration key longer than the schema's 50 characters
        with pytest.raises(c.InvalidCommand):
            await h.gateway.send("CP", c.SetVariables((c.VariableSet("K" * 51, "v"),)))
        _, result = await h.round_trip(cp, c.Reset(), "Reset")
        assert cp.calls[0][2] == "Reset"  # nothing else was sent before
        assert result.status == "Accepted"
