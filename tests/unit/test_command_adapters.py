"""commands_v16 / commands_v201: `plan` (command → calls) and `interpret` (answers → result).

Both are pure; the frames they produce are also checked against the official schemas, so a
plan that a station would refuse fails here without a network.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import pytest

from evflex.fleet import commands as c
from evflex.ocpp import commands_v16, commands_v201
from evflex.ocpp.validation import V16, V201

AT = datetime(2030, 5, 1, 12, 30, tzinfo=UTC)
ALL_COMMANDS: list[c.Command] = [
    c.StartTransaction("TAG", 1),
    c.StopTransaction("42"),
    c.Reset("hard"),
    c.UnlockConnector(1, 1),
    c.ChangeAvailability(False, 1),
    c.SetVariables((c.VariableSet("A", "1", "Ctrlr"), c.VariableSet("B", "2", "Ctrlr", 1))),
    c.GetVariables((c.VariableRef("A", "Ctrlr"),)),
    c.GetBaseReport(3, "SummaryInventory"),
    c.TriggerMessage("Heartbeat"),
    c.SetChargingProfile(
        1,
        c.ChargingProfile(
            9,
            2,
            "tx",
            "W",
            (c.SchedulePeriod(0, -7400.0, 1), c.SchedulePeriod(60, 3680.0)),
            kind="Relative",
            duration_s=600,
            transaction_id="42",
            min_rate=100.0,
        ),
    ),
    c.ClearChargingProfile(),
    c.GetCompositeSchedule(1, 60),
]
ADAPTERS = [
    pytest.param(commands_v16, V16, id="1.6"),
    pytest.param(commands_v201, V201, id="2.0.1"),
]


@pytest.mark.parametrize(("adapter", "schemas"), ADAPTERS)
@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda cmd: type(cmd).__name__)
def test_every_command_plans_schema_valid_known_actions(
    adapter: ModuleType, schemas: Any, command: c.Command
) -> None:
    steps = adapter.plan(command)
    assert steps
    for action, payload in steps:
        assert action in adapter.ACTIONS
        schemas.validate_request(action, payload)
    assert adapter.plan(command) == steps or isinstance(command, c.StartTransaction)


def test_v16_profile_rounds_to_one_decimal_and_converts_ids() -> None:
    profile = c.ChargingProfile(
        1,
        0,
        "tx",
        "A",
        (c.SchedulePeriod(0, 21.44), c.SchedulePeriod(300, 6.06, 3)),
        transaction_id="17",
        min_rate=6.04,
        valid_from=AT,
        start_schedule=AT,
    )
    payload = commands_v16.profile_payload(profile)
    assert payload["transactionId"] == 17
    assert payload["validFrom"] == "2030-05-01T12:30:00.000Z"
    schedule = payload["chargingSchedule"]
    assert schedule["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 21.4},
        {"startPeriod": 300, "limit": 6.1, "numberPhases": 3},
    ]
    assert (schedule["minChargingRate"], schedule["startSchedule"]) == (
        6.0,
        "2030-05-01T12:30:00.000Z",
    )


@pytest.mark.parametrize("adapter", [commands_v16, commands_v201], ids=["1.6", "2.0.1"])
def test_transaction_id_only_on_tx_profiles(adapter: ModuleType) -> None:
    profile = c.ChargingProfile(
        1, 0, "tx_default", "W", (c.SchedulePeriod(0, 1000),), transaction_id="5"
    )
    assert "transactionId" not in adapter.profile_payload(profile)


def test_v16_plan_details() -> None:
    assert commands_v16.plan(c.StartTransaction("T")) == [
        ("RemoteStartTransaction", {"idTag": "T"})
    ]
    assert commands_v16.plan(c.GetVariables()) == [("GetConfiguration", {})]
    assert commands_v16.plan(c.ClearChargingProfile()) == [("ClearChargingProfile", {})]
    assert commands_v16.plan(c.GetCompositeSchedule(0, 10)) == [
        ("GetCompositeSchedule", {"connectorId": 0, "duration": 10})
    ]
    with pytest.raises(c.InvalidCommand):
        commands_v16.plan(c.StopTransaction("abc"))
    with pytest.raises(c.InvalidCommand):
        commands_v16.plan(c.SetVariables(()))


def test_v201_plan_details() -> None:
    assert commands_v201.plan(c.ChangeAvailability(True, 0)) == [
        ("ChangeAvailability", {"operationalStatus": "Operative"})
    ]
    first = commands_v201.plan(c.StartTransaction("T"))[0][1]["remoteStartId"]
    second = commands_v201.plan(c.StartTransaction("T"))[0][1]["remoteStartId"]
    assert second == first + 1
    ((_, payload),) = commands_v201.plan(
        c.SetChargingProfile(
            1, c.ChargingProfile(4, 0, "station_max", "A", (c.SchedulePeriod(0, 21.44),))
        )
    )
    assert payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 21.44}  # 2.0.1 has no one-decimal rule
    ]
    for bad in (c.GetVariables(), c.SetVariables(()), c.SetVariables((c.VariableSet("A", "1"),))):
        with pytest.raises(c.InvalidCommand):
            commands_v201.plan(bad)


def test_unknown_command_is_not_supported() -> None:
    for adapter in (commands_v16, commands_v201):
        with pytest.raises(c.CommandNotSupported):
            adapter.plan(object())  # type: ignore[arg-type]


def test_v16_interpret_set_variables_reports_first_non_accepted() -> None:
    command = c.SetVariables(tuple(c.VariableSet(k, "1") for k in "ABC"))
    result = commands_v16.interpret(
        command, [{"status": "Accepted"}, {"status": "RebootRequired"}, {"status": "Rejected"}]
    )
    assert result.status == "RebootRequired"
    assert result.response == {
        "results": [
            {"variable": "A", "status": "Accepted"},
            {"variable": "B", "status": "RebootRequired"},
            {"variable": "C", "status": "Rejected"},
        ]
    }
    accepted = commands_v16.interpret(command, [{"status": "Accepted"}] * 3)
    assert accepted.status == "Accepted"


@pytest.mark.parametrize("adapter", [commands_v16, commands_v201], ids=["1.6", "2.0.1"])
def test_interpret_plain_status(adapter: ModuleType) -> None:
    assert adapter.interpret(c.Reset(), [{"status": "Rejected"}]) == c.CommandResult(
        "Rejected", {"status": "Rejected"}
    )
    assert adapter.interpret(c.GetBaseReport(), [{"configurationKey": []}]).status is None
    assert adapter.interpret(c.Reset(), [{"status": 3}]).status is None  # not a string


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["Accepted", "Accepted"], "Accepted"),
        (["Accepted", "UnknownComponent", "Rejected"], "UnknownComponent"),
        (["NotSupportedAttributeType"], "NotSupportedAttributeType"),
    ],
)
def test_v201_interpret_variables(statuses: list[str], expected: str) -> None:
    for command, key in (
        (c.SetVariables((c.VariableSet("A", "1", "C"),)), "setVariableResult"),
        (c.GetVariables((c.VariableRef("A", "C"),)), "getVariableResult"),
    ):
        response = {key: [{"attributeStatus": s} for s in statuses]}
        result = commands_v201.interpret(command, [response])
        assert (result.status, result.response) == (expected, response)
