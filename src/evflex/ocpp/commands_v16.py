"""Version-neutral commands → OCPP 1.6 calls, and their answers back.

`plan` is pure: it returns the (action, payload) calls that carry out a command,
usually one; `interpret` folds the responses into a CommandResult.
"""

from __future__ import annotations

from typing import Any

from evflex.fleet import commands as c
from evflex.ocpp.timefmt import format_ts

Call = tuple[str, dict[str, Any]]
_PURPOSE = {
    "tx": "TxProfile",
    "tx_default": "TxDefaultProfile",
    "station_max": "ChargePointMaxProfile",
}
ACTIONS = frozenset(
    {
        "RemoteStartTransaction",
        "RemoteStopTransaction",
        "Reset",
        "UnlockConnector",
        "ChangeAvailability",
        "ChangeConfiguration",
        "GetConfiguration",
        "TriggerMessage",
        "SetChargingProfile",
        "ClearChargingProfile",
        "GetCompositeSchedule",
    }
)


def plan(command: c.Command) -> list[Call]:
    match command:
        case c.StartTransaction(id_token=token, evse_id=evse_id, charging_profile=profile):
            p: dict[str, Any] = {"idTag": token}
            if evse_id is not None:
                p["connectorId"] = evse_id
            if profile is not None:
                p["chargingProfile"] = profile_payload(profile)
            return [("RemoteStartTransaction", p)]
        case c.StopTransaction(transaction_id=tx_id):
            if not tx_id.isdigit():
                raise c.InvalidCommand("OCPP 1.6 transaction ids are integers")
            return [("RemoteStopTransaction", {"transactionId": int(tx_id)})]
        case c.Reset(kind=kind):
            return [("Reset", {"type": kind.capitalize()})]
        case c.UnlockConnector(evse_id=evse_id):
            return [("UnlockConnector", {"connectorId": evse_id})]
        case c.ChangeAvailability(operative=operative, evse_id=evse_id):
            return [
                (
                    "ChangeAvailability",
                    {"connectorId": evse_id, "type": "Operative" if operative else "Inoperative"},
                )
            ]
        case c.SetVariables(items=items):
            if not items:
                raise c.InvalidCommand("no variables to set")
            return [("ChangeConfiguration", {"key": i.variable, "value": i.value}) for i in items]
        case c.GetVariables(items=items):
            return [("GetConfiguration", {"key": [i.variable for i in items]} if items else {})]
        case c.GetBaseReport():
            # 1.6 has no device model; the full configuration is its nearest equivalent.
            return [("GetConfiguration", {})]
        case c.TriggerMessage(message=message, evse_id=evse_id):
            p = {"requestedMessage": message}
            if evse_id is not None:
                p["connectorId"] = evse_id
            return [("TriggerMessage", p)]
        case c.SetChargingProfile(evse_id=evse_id, profile=profile):
            return [
                (
                    "SetChargingProfile",
                    {"connectorId": evse_id, "csChargingProfiles": profile_payload(profile)},
                )
            ]
        case c.ClearChargingProfile():
            return [("ClearChargingProfile", _clear_payload(command))]
        case c.GetCompositeSchedule(evse_id=evse_id, duration_s=duration, unit=unit):
            p = {"connectorId": evse_id, "duration": duration}
            if unit is not None:
                p["chargingRateUnit"] = unit
            return [("GetCompositeSchedule", p)]
    raise c.CommandNotSupported(f"{type(command).__name__} has no OCPP 1.6 equivalent")


def profile_payload(profile: c.ChargingProfile) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "chargingRateUnit": profile.unit,
        "chargingSchedulePeriod": [_period(p) for p in profile.periods],
    }
    if profile.duration_s is not None:
        schedule["duration"] = profile.duration_s
    if profile.start_schedule is not None:
        schedule["startSchedule"] = format_ts(profile.start_schedule)
    if profile.min_rate is not None:
        schedule["minChargingRate"] = round(profile.min_rate, 1)
    p: dict[str, Any] = {
        "chargingProfileId": profile.profile_id,
        "stackLevel": profile.stack_level,
        "chargingProfilePurpose": _PURPOSE[profile.purpose],
        "chargingProfileKind": profile.kind,
        "chargingSchedule": schedule,
    }
    if profile.transaction_id is not None and profile.purpose == "tx":
        p["transactionId"] = int(profile.transaction_id)
    if profile.recurrency is not None:
        p["recurrencyKind"] = profile.recurrency
    if profile.valid_from is not None:
        p["validFrom"] = format_ts(profile.valid_from)
    if profile.valid_to is not None:
        p["validTo"] = format_ts(profile.valid_to)
    return p


def _period(period: c.SchedulePeriod) -> dict[str, Any]:
    # 1.6 schema: limit is a decimal with one digit (multipleOf 0.1)
    out: dict[str, Any] = {"startPeriod": period.start_s, "limit": round(period.limit, 1)}
    if period.number_phases is not None:
        out["numberPhases"] = period.number_phases
    return out


def _clear_payload(command: c.ClearChargingProfile) -> dict[str, Any]:
    p: dict[str, Any] = {}
    if command.profile_id is not None:
        p["id"] = command.profile_id
    if command.evse_id is not None:
        p["connectorId"] = command.evse_id
    if command.purpose is not None:
        p["chargingProfilePurpose"] = _PURPOSE[command.purpose]
    if command.stack_level is not None:
        p["stackLevel"] = command.stack_level
    return p


def interpret(command: c.Command, responses: list[dict[str, Any]]) -> c.CommandResult:
    if isinstance(command, c.SetVariables):
        results = [
            {"variable": item.variable, "status": r.get("status")}
            for item, r in zip(command.items, responses, strict=True)
        ]
        statuses = {r["status"] for r in results}
        status = (
            "Accepted"
            if statuses == {"Accepted"}
            else next(s for s in (r["status"] for r in results) if s != "Accepted")
        )
        return c.CommandResult(status, {"results": results})
    response = responses[-1] if responses else {}
    status = response.get("status")
    return c.CommandResult(status if isinstance(status, str) else None, response)
