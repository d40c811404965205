"""Version-neutral commands → OCPP 2.0.1 calls, and their answers back."""

from __future__ import annotations

import itertools
from typing import Any

from evflex.fleet import commands as c
from evflex.ocpp.timefmt import format_ts, now

Call = tuple[str, dict[str, Any]]
_PURPOSE = {
    "tx": "TxProfile",
    "tx_default": "TxDefaultProfile",
    "station_max": "ChargingStationMaxProfile",
}
_remote_start_ids = itertools.count(1)
ACTIONS = frozenset(
    {
        "RequestStartTransaction",
        "RequestStopTransaction",
        "Reset",
        "UnlockConnector",
        "ChangeAvailability",
        "SetVariables",
        "GetVariables",
        "GetBaseReport",
        "TriggerMessage",
        "SetChargingProfile",
        "ClearChargingProfile",
        "GetCompositeSchedule",
        "GetMonitoringReport",
        "SetVariableMonitoring",
        "ClearVariableMonitoring",
    }
)
_CRITERIA = {
    "Delta": "DeltaMonitoring",
    "Periodic": "PeriodicMonitoring",
    "Threshold": "ThresholdMonitoring",
}


def plan(command: c.Command) -> list[Call]:
    match command:
        case c.StartTransaction(id_token=token, evse_id=evse_id, charging_profile=profile):
            p: dict[str, Any] = {
                "idToken": {"idToken": token, "type": "Central"},
                "remoteStartId": next(_remote_start_ids),
            }
            if evse_id is not None:
                p["evseId"] = evse_id
            if profile is not None:
                p["chargingProfile"] = profile_payload(profile)
            return [("RequestStartTransaction", p)]
        case c.StopTransaction(transaction_id=tx_id):
            return [("RequestStopTransaction", {"transactionId": tx_id})]
        case c.Reset(kind=kind):
            return [("Reset", {"type": "Immediate" if kind == "hard" else "OnIdle"})]
        case c.UnlockConnector(evse_id=evse_id, connector_id=connector_id):
            return [("UnlockConnector", {"evseId": evse_id, "connectorId": connector_id})]
        case c.ChangeAvailability(operative=operative, evse_id=evse_id):
            p = {"operationalStatus": "Operative" if operative else "Inoperative"}
            if evse_id:
                p["evse"] = {"id": evse_id}
            return [("ChangeAvailability", p)]
        case c.SetVariables(items=items):
            if not items:
                raise c.InvalidCommand("no variables to set")
            return [
                (
                    "SetVariables",
                    {
                        "setVariableData": [
                            {
                                "attributeValue": i.value,
                                "component": _component(i.component, i.evse_id),
                                "variable": {"name": i.variable},
                            }
                            for i in items
                        ]
                    },
                )
            ]
        case c.GetVariables(items=items):
            if not items:
                raise c.InvalidCommand(
                    "OCPP 2.0.1 GetVariables needs at least one variable; "
                    "use get_base_report for everything"
                )
            return [
                (
                    "GetVariables",
                    {
                        "getVariableData": [
                            {
                                "component": _component(i.component, i.evse_id),
                                "variable": {"name": i.variable},
                            }
                            for i in items
                        ]
                    },
                )
            ]
        case c.GetBaseReport(request_id=request_id, report_base=base):
            return [("GetBaseReport", {"requestId": request_id, "reportBase": base})]
        case c.TriggerMessage(message=message, evse_id=evse_id):
            p = {"requestedMessage": message}
            if evse_id is not None:
                p["evse"] = {"id": evse_id}
            return [("TriggerMessage", p)]
        case c.SetChargingProfile(evse_id=evse_id, profile=profile):
            return [
                (
                    "SetChargingProfile",
                    {"evseId": evse_id, "chargingProfile": profile_payload(profile)},
                )
            ]
        case c.ClearChargingProfile():
            return [("ClearChargingProfile", _clear_payload(command))]
        case c.GetCompositeSchedule(evse_id=evse_id, duration_s=duration, unit=unit):
            p = {"evseId": evse_id, "duration": duration}
            if unit is not None:
                p["chargingRateUnit"] = unit
            return [("GetCompositeSchedule", p)]
        case c.GetMonitoringReport(request_id=request_id, kinds=kinds, variables=variables):
            p = {"requestId": request_id}
            if kinds:
                p["monitoringCriteria"] = [_CRITERIA[k] for k in kinds]
            if variables:
                p["componentVariable"] = [
                    {
                        "component": _component(v.component, v.evse_id),
                        "variable": {"name": v.variable},
                    }
                    for v in variables
                ]
            return [("GetMonitoringReport", p)]
        case c.SetVariableMonitoring(items=monitors):
            if not monitors:
                raise c.InvalidCommand("no monitors to set")
            return [
                ("SetVariableMonitoring", {"setMonitoringData": [_monitor(m) for m in monitors]})
            ]
        case c.ClearVariableMonitoring(monitor_ids=ids):
            if not ids:
                raise c.InvalidCommand("no monitor ids to clear")
            return [("ClearVariableMonitoring", {"id": list(ids)})]
    raise c.CommandNotSupported(f"{type(command).__name__} has no OCPP 2.0.1 equivalent")


def _monitor(m: c.Monitor) -> dict[str, Any]:
    p: dict[str, Any] = {
        "value": m.value,
        "type": m.kind,
        "severity": m.severity,
        "transaction": m.transaction,
        "component": _component(m.component, m.evse_id),
        "variable": {"name": m.variable},
    }
    if m.monitor_id is not None:
        p["id"] = m.monitor_id
    return p


def _component(name: str | None, evse_id: int | None) -> dict[str, Any]:
    if not name:
        raise c.InvalidCommand("OCPP 2.0.1 variables need a component name")
    component: dict[str, Any] = {"name": name}
    if evse_id is not None:
        component["evse"] = {"id": evse_id}
    return component


def profile_payload(profile: c.ChargingProfile) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "id": profile.profile_id,
        "chargingRateUnit": profile.unit,
        "chargingSchedulePeriod": [_period(p) for p in profile.periods],
    }
    if profile.duration_s is not None:
        schedule["duration"] = profile.duration_s
    if profile.start_schedule is not None:
        schedule["startSchedule"] = format_ts(profile.start_schedule)
    elif profile.kind == "Absolute":
        # K01.FR.40: an Absolute schedule without startSchedule shall be rejected
        schedule["startSchedule"] = format_ts(now())
    if profile.min_rate is not None:
        schedule["minChargingRate"] = profile.min_rate
    p: dict[str, Any] = {
        "id": profile.profile_id,
        "stackLevel": profile.stack_level,
        "chargingProfilePurpose": _PURPOSE[profile.purpose],
        "chargingProfileKind": profile.kind,
        "chargingSchedule": [schedule],
    }
    if profile.transaction_id is not None and profile.purpose == "tx":
        p["transactionId"] = profile.transaction_id
    if profile.recurrency is not None:
        p["recurrencyKind"] = profile.recurrency
    if profile.valid_from is not None:
        p["validFrom"] = format_ts(profile.valid_from)
    if profile.valid_to is not None:
        p["validTo"] = format_ts(profile.valid_to)
    return p


def _period(period: c.SchedulePeriod) -> dict[str, Any]:
    out: dict[str, Any] = {"startPeriod": period.start_s, "limit": period.limit}
    if period.number_phases is not None:
        out["numberPhases"] = period.number_phases
    return out


def _clear_payload(command: c.ClearChargingProfile) -> dict[str, Any]:
    p: dict[str, Any] = {}
    if command.profile_id is not None:
        p["chargingProfileId"] = command.profile_id
    criteria: dict[str, Any] = {}
    if command.evse_id is not None:
        criteria["evseId"] = command.evse_id
    if command.purpose is not None:
        criteria["chargingProfilePurpose"] = _PURPOSE[command.purpose]
    if command.stack_level is not None:
        criteria["stackLevel"] = command.stack_level
    if criteria:
        p["chargingProfileCriteria"] = criteria
    return p


def interpret(command: c.Command, responses: list[dict[str, Any]]) -> c.CommandResult:
    response = responses[-1] if responses else {}
    if isinstance(command, c.SetVariables | c.GetVariables):
        key = "setVariableResult" if isinstance(command, c.SetVariables) else "getVariableResult"
        statuses = [r.get("attributeStatus") for r in response.get(key, [])]
        status = (
            "Accepted"
            if all(s == "Accepted" for s in statuses)
            else next((s for s in statuses if s != "Accepted"), None)
        )
        return c.CommandResult(status, response)
    if isinstance(command, c.SetVariableMonitoring | c.ClearVariableMonitoring):
        return _monitoring_result(command, response)
    status = response.get("status")
    return c.CommandResult(status if isinstance(status, str) else None, response)


def _monitoring_result(
    command: c.SetVariableMonitoring | c.ClearVariableMonitoring, response: dict[str, Any]
) -> c.CommandResult:
    """Version-neutral `results`: one {status, monitor_id, ...} per item, in request order."""
    results: list[dict[str, Any]] = []
    if isinstance(command, c.SetVariableMonitoring):
        for r in response.get("setMonitoringResult", []):
            comp = r.get("component", {})
            results.append(
                {
                    "status": r.get("status"),
                    "monitor_id": r.get("id"),
                    "kind": r.get("type"),
                    "severity": r.get("severity"),
                    "component": comp.get("name"),
                    "evse_id": (comp.get("evse") or {}).get("id"),
                    "variable": r.get("variable", {}).get("name"),
                }
            )
    else:
        results = [
            {"status": r.get("status"), "monitor_id": r.get("id")}
            for r in response.get("clearMonitoringResult", [])
        ]
    statuses = [r["status"] for r in results]
    status = next((s for s in statuses if s != "Accepted"), "Accepted" if statuses else None)
    return c.CommandResult(status, {"results": results})
