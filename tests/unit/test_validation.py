"""Schema validation and its mapping of JSON-schema failures onto OCPP-J CallError codes."""

from __future__ import annotations

from typing import Any

import pytest

from evflex.ocpp.errors import OcppError
from evflex.ocpp.validation import V16, V201, SchemaSet

STATUS16 = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}


def error_of(schemas: SchemaSet, action: str, payload: Any) -> OcppError:
    with pytest.raises(OcppError) as caught:
        schemas.validate_request(action, payload)
    return caught.value


@pytest.mark.parametrize(
    ("schemas", "action", "payload", "code", "field"),
    [
        pytest.param(
            V16,
            "StatusNotification",
            {**STATUS16, "connectorId": "1"},
            "TypeConstraintViolation",
            "data.connectorId",
            id="type",
        ),
        pytest.param(V201, "Heartbeat", [], "TypeConstraintViolation", "data", id="not-an-object"),
        pytest.param(
            V16,
            "Authorize",
            {"idTag": "x" * 21},
            "TypeConstraintViolation",
            "data.idTag",
            id="maxLength-is-type",
        ),
        pytest.param(
            V16,
            "StatusNotification",
            {**STATUS16, "status": "Bogus"},
            "PropertyConstraintViolation",
            "data.status",
            id="enum",
        ),
        pytest.param(
            V16,
            "StatusNotification",
            {**STATUS16, "timestamp": "yesterday"},
            "PropertyConstraintViolation",
            "data.timestamp",
            id="date-time",
        ),
        pytest.param(
            V16,
            "StatusNotification",
            {"connectorId": 1, "status": "Available"},
            "OccurrenceConstraintViolation",
            "data",
            id="required",
        ),
        pytest.param(
            V16,
            "MeterValues",
            {"connectorId": 1, "meterValue": []},
            "OccurrenceConstraintViolation",
            "data.meterValue",
            id="minItems",
        ),
        pytest.param(
            V201,
            "TransactionEvent",
            {"eventType": "Started"},
            "OccurrenceConstraintViolation",
            "data",
            id="required-201",
        ),
        pytest.param(
            V201,
            "Heartbeat",
            {"unexpected": 1},
            "FormatViolation",
            "data",
            id="additionalProperties",
        ),
    ],
)
def test_rule_to_call_error_code(
    schemas: SchemaSet, action: str, payload: Any, code: str, field: str
) -> None:
    error = error_of(schemas, action, payload)
    assert error.code == code
    assert error.details == {"field": field}
    assert error.description.startswith(f"{action}: ")


@pytest.mark.parametrize(
    ("code", "v16", "v201"),
    [
        ("FormatViolation", "FormationViolation", "FormatViolation"),
        (
            "OccurrenceConstraintViolation",
            "OccurenceConstraintViolation",
            "OccurrenceConstraintViolation",
        ),
        ("MessageTypeNotSupported", "NotSupported", "MessageTypeNotSupported"),
        ("TypeConstraintViolation", "TypeConstraintViolation", "TypeConstraintViolation"),
        ("SecurityError", "SecurityError", "SecurityError"),
    ],
)
def test_code_spelling_per_version(code: str, v16: str, v201: str) -> None:
    error = OcppError(code, "x")
    assert (error.code_for(True), error.code_for(False)) == (v16, v201)


def test_description_is_capped_at_255_characters() -> None:
    error = OcppError("GenericError", "d" * 300, {"k": 1})
    assert len(error.description) == 255
    assert error.details == {"k": 1}
    assert OcppError("GenericError", "d").details == {}


def _profile16(*limits: float) -> dict[str, Any]:
    return {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [
                    {"startPeriod": i * 60, "limit": limit} for i, limit in enumerate(limits)
                ],
            },
        },
    }


def test_one_decimal_limits_pass_despite_binary_floats() -> None:
    """21.4 / 0.1 == 213.99999999999997: a literal multipleOf check would refuse it."""
    V16.validate_request("SetChargingProfile", _profile16(21.4, 0.3, 6.1, 32.0))
    V16.validate_response(
        "GetCompositeSchedule",
        {
            "status": "Accepted",
            "connectorId": 1,
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 21.4}],
                "minChargingRate": 0.3,
            },
        },
    )


def test_responses_are_validated_too() -> None:
    V201.validate_response("Reset", {"status": "Scheduled"})
    with pytest.raises(OcppError) as caught:
        V201.validate_response("Reset", {"status": "Maybe"})
    assert caught.value.code == "PropertyConstraintViolation"
    with pytest.raises(OcppError) as caught:
        V16.validate_response("GetConfiguration", {"configurationKey": [{"key": "K"}]})
    assert caught.value.code == "OccurrenceConstraintViolation"  # readonly is required


def test_action_sets() -> None:
    assert {"BootNotification", "StartTransaction", "Reset", "SignCertificate"} <= V16.actions
    assert {"TransactionEvent", "NotifyEVChargingNeeds", "GetBaseReport"} <= V201.actions
    assert not any(a.endswith(("Response", "Request")) for a in V16.actions | V201.actions)
    assert "TransactionEvent" not in V16.actions
    assert "StartTransaction" not in V201.actions


def test_warm_compiles_only_known_actions() -> None:
    V201.warm({"Heartbeat", "NoSuchAction"})  # unknown names are skipped, not an error
    V201.validate_request("Heartbeat", {})
