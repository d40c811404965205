"""The OCPP 2.0.1 device model of a simulated station (Part 2 appendix, B05-B08).

Components and variables with their mutability and characteristics, answered
through GetVariables / SetVariables / GetBaseReport. The station reads its
telemetry settings from here (SampledDataCtrlr.TxUpdatedInterval,
TxUpdatedMeasurands, OCPPCommCtrlr.HeartbeatInterval); EVSE.Power is live.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from evflex.sim.catalogue import Kind, Model, Monitoring
from evflex.sim.config16 import default_sampled, supported_measurands

Key = tuple[str, int, str, str]  # component, evse id (0 = none), variable, instance


@dataclass(frozen=True, slots=True)
class Variable:
    """A variable's definition and factory value, shared by every station of a model."""

    component: str
    variable: str
    value: str
    evse: int = 0
    mutability: str = "ReadWrite"  # ReadOnly | WriteOnly | ReadWrite
    data_type: str = "string"  # string | decimal | integer | boolean | MemberList | OptionList
    unit: str | None = None
    monitorable: bool = False
    minimum: int = 0
    max_limit: float | None = None
    values_list: str | None = None
    instance: str = ""

    @property
    def key(self) -> Key:
        return (self.component, self.evse, self.variable, self.instance)


@functools.cache
def _catalogue(model: Model, interval_s: int) -> dict[Key, Variable]:
    variables = _variables(model, interval_s) + _evse_variables(model)
    return {v.key: v for v in variables}


@functools.cache
def _components(model: Model, interval_s: int) -> frozenset[tuple[str, int]]:
    return frozenset((c, e) for c, e, _, _ in _catalogue(model, interval_s))


_IDENTITY: Key = ("SecurityCtrlr", 0, "Identity", "")


def _variables(model: Model, interval_s: int) -> list[Variable]:
    ro = "ReadOnly"
    measurands = ",".join(supported_measurands(model))
    sampled = default_sampled(model)
    if model.kind is Kind.V2G:
        sampled += ",Power.Active.Export,Energy.Active.Export.Register"
    out = [
        Variable("ChargingStation", "Model", model.model, mutability=ro),
        Variable("ChargingStation", "VendorName", model.vendor, mutability=ro),
        Variable("ChargingStation", "AvailabilityState", "Available", mutability=ro),
        Variable(
            "ChargingStation", "SupplyPhases", str(model.phases), mutability=ro, data_type="integer"
        ),
        Variable("OCPPCommCtrlr", "HeartbeatInterval", "300", data_type="integer", unit="s"),
        Variable("OCPPCommCtrlr", "OfflineThreshold", "60", data_type="integer", unit="s"),
        Variable("OCPPCommCtrlr", "RetryBackOffWaitMinimum", "1", data_type="integer", unit="s"),
        Variable("OCPPCommCtrlr", "RetryBackOffRandomRange", "2", data_type="integer", unit="s"),
        Variable("OCPPCommCtrlr", "RetryBackOffRepeatTimes", "5", data_type="integer"),
        Variable(
            "OCPPCommCtrlr",
            "MessageAttempts",
            "3",
            data_type="integer",
            instance="TransactionEvent",
        ),
        Variable("SampledDataCtrlr", "Enabled", "true", data_type="boolean"),
        Variable(
            "SampledDataCtrlr",
            "TxUpdatedInterval",
            str(interval_s),
            data_type="integer",
            unit="s",
            minimum=model.min_sample_interval_s,
        ),
        Variable(
            "SampledDataCtrlr",
            "TxUpdatedMeasurands",
            sampled,
            data_type="MemberList",
            values_list=measurands,
        ),
        Variable(
            "SampledDataCtrlr",
            "TxEndedMeasurands",
            "Energy.Active.Import.Register",
            data_type="MemberList",
            values_list=measurands,
        ),
        Variable("SampledDataCtrlr", "TxEndedInterval", "0", data_type="integer", unit="s"),
        Variable("SmartChargingCtrlr", "Enabled", "true", mutability=ro, data_type="boolean"),
        Variable(
            "SmartChargingCtrlr",
            "RateUnit",
            ",".join(model.rate_units),
            mutability=ro,
            data_type="MemberList",
            values_list="A,W",
        ),
        Variable(
            "SmartChargingCtrlr",
            "ProfileStackLevel",
            str(model.max_stack_level),
            mutability=ro,
            data_type="integer",
        ),
        Variable(
            "SmartChargingCtrlr",
            "PeriodsPerSchedule",
            str(model.max_periods),
            mutability=ro,
            data_type="integer",
        ),
        Variable(
            "SmartChargingCtrlr",
            "Entries",
            str(model.max_profiles),
            mutability=ro,
            data_type="integer",
            instance="ChargingProfiles",
        ),
        Variable("AuthCtrlr", "AuthorizeRemoteStart", "false", data_type="boolean"),
        Variable("AuthCtrlr", "LocalAuthorizeOffline", "true", data_type="boolean"),
        Variable("TxCtrlr", "EVConnectionTimeOut", "60", data_type="integer", unit="s"),
        Variable("TxCtrlr", "StopTxOnEVSideDisconnect", "true", mutability=ro, data_type="boolean"),
        Variable("SecurityCtrlr", "Identity", "", mutability=ro),
        Variable("SecurityCtrlr", "SecurityProfile", "1", mutability=ro, data_type="integer"),
        Variable("SecurityCtrlr", "BasicAuthPassword", "", mutability="WriteOnly"),
        Variable(
            "DeviceDataCtrlr",
            "ItemsPerMessage",
            "50",
            mutability=ro,
            data_type="integer",
            instance="GetReport",
        ),
        Variable(
            "DeviceDataCtrlr",
            "ItemsPerMessage",
            "50",
            mutability=ro,
            data_type="integer",
            instance="GetVariables",
        ),
        Variable(
            "DeviceDataCtrlr",
            "ItemsPerMessage",
            "50",
            mutability=ro,
            data_type="integer",
            instance="SetVariables",
        ),
    ]
    if model.monitoring is not Monitoring.NONE:
        out.append(Variable("MonitoringCtrlr", "Enabled", "true", data_type="boolean"))
        out.append(
            Variable(
                "MonitoringCtrlr",
                "ItemsPerMessage",
                "20",
                mutability=ro,
                data_type="integer",
                instance="SetVariableMonitoring",
            )
        )
    return out


def _evse_variables(model: Model) -> list[Variable]:
    monitorable = model.monitoring is not Monitoring.NONE
    out: list[Variable] = []
    for evse in range(1, model.connectors + 1):
        out += [
            Variable(
                "EVSE",
                "Power",
                "0",
                evse=evse,
                mutability="ReadOnly",
                data_type="decimal",
                unit="W",
                monitorable=monitorable,
                max_limit=model.max_power_w,
            ),
            Variable("EVSE", "AvailabilityState", "Available", evse=evse, mutability="ReadOnly"),
            Variable(
                "EVSE",
                "SupplyPhases",
                str(model.phases),
                evse=evse,
                mutability="ReadOnly",
                data_type="integer",
            ),
        ]
    return out


class DeviceModel:
    """One station's device model: the model's shared catalogue plus its own values."""

    __slots__ = ("_components", "_live", "_values", "_vars")

    def __init__(
        self, model: Model, station_id: str, *, interval_s: int, live: Callable[[Variable], str]
    ) -> None:
        self._vars = _catalogue(model, interval_s)
        self._components = _components(model, interval_s)
        self._values: dict[Key, str] = {_IDENTITY: station_id}
        self._live = live

    def __iter__(self) -> Iterator[Variable]:
        return iter(self._vars.values())

    def find(self, component: dict[str, Any], variable: dict[str, Any]) -> Variable | str:
        """The variable, or "UnknownComponent" / "UnknownVariable"."""
        name, evse = component["name"], (component.get("evse") or {}).get("id", 0)
        if (name, evse) not in self._components:
            return "UnknownComponent"
        key = (name, evse, variable["name"], variable.get("instance", ""))
        return self._vars.get(key, "UnknownVariable")

    def value(self, var: Variable) -> str:
        if var.component == "EVSE" and var.variable == "Power":
            return self._live(var)
        return self._values.get(var.key, var.value)

    def assign(self, component: str, variable: str, value: str) -> None:
        """Set a value the station itself decides (e.g. the heartbeat the CSMS gave)."""
        self._values[(component, 0, variable, "")] = value

    def int(self, component: str, variable: str, instance: str = "") -> int:
        return int(self.value(self._vars[(component, 0, variable, instance)]) or 0)

    def members(self, component: str, variable: str) -> tuple[str, ...]:
        value = self.value(self._vars[(component, 0, variable, "")])
        return tuple(v.strip() for v in value.split(",") if v.strip())

    def get(self, item: dict[str, Any]) -> dict[str, Any]:
        """One GetVariableResult (B06)."""
        component, variable = item["component"], item["variable"]
        kind = item.get("attributeType", "Actual")
        out: dict[str, Any] = {"attributeType": kind, "component": component, "variable": variable}
        found = self.find(component, variable)
        if isinstance(found, str):
            return {**out, "attributeStatus": found}
        if kind != "Actual":
            return {**out, "attributeStatus": "NotSupportedAttributeType"}
        if found.mutability == "WriteOnly":
            return {**out, "attributeStatus": "Rejected"}
        return {**out, "attributeStatus": "Accepted", "attributeValue": self.value(found)[:2500]}

    def set(self, item: dict[str, Any]) -> dict[str, Any]:
        """One SetVariableResult (B05)."""
        component, variable = item["component"], item["variable"]
        kind = item.get("attributeType", "Actual")
        out: dict[str, Any] = {"attributeType": kind, "component": component, "variable": variable}
        found = self.find(component, variable)
        if isinstance(found, str):
            return {**out, "attributeStatus": found}
        if kind != "Actual":
            return {**out, "attributeStatus": "NotSupportedAttributeType"}
        value = str(item["attributeValue"])
        if found.mutability == "ReadOnly" or not _valid(found, value):
            return {**out, "attributeStatus": "Rejected"}
        self._values[found.key] = value
        return {**out, "attributeStatus": "Accepted"}

    def report(self, base: str) -> list[dict[str, Any]]:
        """ReportData entries for GetBaseReport (B07)."""
        chosen = [v for v in self._vars.values() if _in_base(v, base)]
        return [self._report_data(v) for v in chosen]

    def _report_data(self, v: Variable) -> dict[str, Any]:
        attribute: dict[str, Any] = {
            "type": "Actual",
            "mutability": v.mutability,
            "persistent": True,
            "constant": v.mutability == "ReadOnly",
        }
        if v.mutability != "WriteOnly":
            attribute["value"] = self.value(v)[:2500]
        characteristics: dict[str, Any] = {
            "dataType": v.data_type,
            "supportsMonitoring": v.monitorable,
        }
        if v.unit is not None:
            characteristics["unit"] = v.unit
        if v.max_limit is not None:
            characteristics["maxLimit"] = v.max_limit
        if v.values_list is not None:
            characteristics["valuesList"] = v.values_list
        component: dict[str, Any] = {"name": v.component}
        if v.evse:
            component["evse"] = {"id": v.evse}
        variable: dict[str, Any] = {"name": v.variable}
        if v.instance:
            variable["instance"] = v.instance
        return {
            "component": component,
            "variable": variable,
            "variableAttribute": [attribute],
            "variableCharacteristics": characteristics,
        }


def _in_base(v: Variable, base: str) -> bool:
    if base == "ConfigurationInventory":
        return v.mutability != "ReadOnly"
    if base == "SummaryInventory":
        return v.variable == "AvailabilityState"
    return True  # FullInventory


def _valid(v: Variable, value: str) -> bool:
    if v.data_type == "integer":
        return value.lstrip("-").isdigit() and (int(value) == 0 or int(value) >= v.minimum)
    if v.data_type == "boolean":
        return value in ("true", "false")
    if v.data_type == "decimal":
        try:
            float(value)
        except ValueError:
            return False
        return True
    if v.data_type == "MemberList" and v.values_list is not None:
        allowed = set(v.values_list.split(","))
        return all(m.strip() in allowed for m in value.split(",") if m.strip())
    if v.variable == "BasicAuthPassword":
        return 16 <= len(value) <= 40
    return True
