"""Request bodies of `POST /api/v1/stations/{id}/commands/{command}`, mapped to domain commands.

The bodies are version-neutral: the gateway picks the OCPP 1.6 or 2.0.1 message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from evflex.fleet import commands as c


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeriodIn(_Body):
    start_s: int = Field(0, ge=0, description="seconds from the schedule start")
    limit: float = Field(description="W or A per `unit`; negative = discharge")
    number_phases: int | None = Field(None, ge=1, le=3)


class ProfileIn(_Body):
    profile_id: int = Field(ge=1)
    stack_level: int = Field(0, ge=0)
    purpose: Literal["tx", "tx_default", "station_max"] = "tx_default"
    unit: Literal["W", "A"] = "W"
    periods: list[PeriodIn] = Field(min_length=1)
    kind: Literal["Absolute", "Relative", "Recurring"] = "Absolute"
    recurrency: Literal["Daily", "Weekly"] | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    duration_s: int | None = Field(None, ge=1)
    start_schedule: datetime | None = None
    transaction_id: str | None = None
    min_rate: float | None = None

    def to_domain(self) -> c.ChargingProfile:
        return c.ChargingProfile(
            profile_id=self.profile_id,
            stack_level=self.stack_level,
            purpose=self.purpose,
            unit=self.unit,
            periods=tuple(
                c.SchedulePeriod(p.start_s, p.limit, p.number_phases) for p in self.periods
            ),
            kind=self.kind,
            recurrency=self.recurrency,
            valid_from=self.valid_from,
            valid_to=self.valid_to,
            duration_s=self.duration_s,
            start_schedule=self.start_schedule,
            transaction_id=self.transaction_id,
            min_rate=self.min_rate,
        )


class StartTransactionIn(_Body):
    id_token: str = Field(min_length=1, max_length=36)
    evse_id: int | None = Field(None, ge=1)
    charging_profile: ProfileIn | None = None

    def to_command(self) -> c.Command:
        profile = self.charging_profile.to_domain() if self.charging_profile else None
        return c.StartTransaction(self.id_token, self.evse_id, profile)


class StopTransactionIn(_Body):
    transaction_id: str = Field(min_length=1, max_length=36)

    def to_command(self) -> c.Command:
        return c.StopTransaction(self.transaction_id)


class ResetIn(_Body):
    kind: Literal["soft", "hard"] = "soft"

    def to_command(self) -> c.Command:
        return c.Reset(self.kind)


class UnlockConnectorIn(_Body):
    evse_id: int = Field(ge=1)
    connector_id: int = Field(1, ge=1)

    def to_command(self) -> c.Command:
        return c.UnlockConnector(self.evse_id, self.connector_id)


class ChangeAvailabilityIn(_Body):
    operative: bool
    evse_id: int = Field(0, ge=0, description="0 = the whole station")

    def to_command(self) -> c.Command:
        return c.ChangeAvailability(self.operative, self.evse_id)


class VariableIn(_Body):
    variable: str = Field(min_length=1, max_length=50)
    value: str = Field(max_length=1000)
    component: str | None = Field(None, max_length=50)
    evse_id: int | None = None


class SetVariablesIn(_Body):
    items: list[VariableIn] = Field(min_length=1)

    def to_command(self) -> c.Command:
        return c.SetVariables(
            tuple(c.VariableSet(i.variable, i.value, i.component, i.evse_id) for i in self.items)
        )


class VariableRefIn(_Body):
    variable: str = Field(min_length=1, max_length=50)
    component: str | None = Field(None, max_length=50)
    evse_id: int | None = None


class GetVariablesIn(_Body):
    items: list[VariableRefIn] = Field(default_factory=list)

    def to_command(self) -> c.Command:
        return c.GetVariables(
            tuple(c.VariableRef(i.variable, i.component, i.evse_id) for i in self.items)
        )


class GetBaseReportIn(_Body):
    request_id: int = 1
    report_base: Literal["FullInventory", "ConfigurationInventory", "SummaryInventory"] = (
        "FullInventory"
    )

    def to_command(self) -> c.Command:
        return c.GetBaseReport(self.request_id, self.report_base)


class TriggerMessageIn(_Body):
    message: str = Field(min_length=1, description="e.g. StatusNotification, MeterValues")
    evse_id: int | None = None

    def to_command(self) -> c.Command:
        return c.TriggerMessage(self.message, self.evse_id)


class SetChargingProfileIn(_Body):
    evse_id: int = Field(ge=0)
    profile: ProfileIn

    def to_command(self) -> c.Command:
        return c.SetChargingProfile(self.evse_id, self.profile.to_domain())


class ClearChargingProfileIn(_Body):
    profile_id: int | None = None
    evse_id: int | None = Field(None, ge=0)
    purpose: Literal["tx", "tx_default", "station_max"] | None = None
    stack_level: int | None = Field(None, ge=0)

    def to_command(self) -> c.Command:
        return c.ClearChargingProfile(self.profile_id, self.evse_id, self.purpose, self.stack_level)


class GetCompositeScheduleIn(_Body):
    evse_id: int = Field(ge=0)
    duration_s: int = Field(ge=1)
    unit: Literal["W", "A"] | None = None

    def to_command(self) -> c.Command:
        return c.GetCompositeSchedule(self.evse_id, self.duration_s, self.unit)


BODIES: dict[str, type[_Body]] = {
    "start_transaction": StartTransactionIn,
    "stop_transaction": StopTransactionIn,
    "reset": ResetIn,
    "unlock_connector": UnlockConnectorIn,
    "change_availability": ChangeAvailabilityIn,
    "set_variables": SetVariablesIn,
    "change_configuration": SetVariablesIn,
    "get_variables": GetVariablesIn,
    "get_configuration": GetVariablesIn,
    "get_base_report": GetBaseReportIn,
    "trigger_message": TriggerMessageIn,
    "set_charging_profile": SetChargingProfileIn,
    "clear_charging_profile": ClearChargingProfileIn,
    "get_composite_schedule": GetCompositeScheduleIn,
}
