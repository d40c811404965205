"""The version-neutral command API: what evflex can ask a station to do.

Callers (REST API, grid services) build these records; the gateway translates
them into OCPP 1.6 or 2.0.1 calls. Field names carry units.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class StartTransaction:
    id_token: str
    evse_id: int | None = None
    charging_profile: ChargingProfile | None = None


@dataclass(frozen=True, slots=True)
class StopTransaction:
    transaction_id: str


@dataclass(frozen=True, slots=True)
class Reset:
    kind: Literal["soft", "hard"] = "soft"


@dataclass(frozen=True, slots=True)
class UnlockConnector:
    evse_id: int
    connector_id: int = 1


@dataclass(frozen=True, slots=True)
class ChangeAvailability:
    operative: bool
    evse_id: int = 0  # 0 = whole station


@dataclass(frozen=True, slots=True)
class VariableSet:
    """One configuration value. 1.6 uses only `variable` (the configuration key)."""

    variable: str
    value: str
    component: str | None = None
    evse_id: int | None = None


@dataclass(frozen=True, slots=True)
class SetVariables:
    """1.6 ChangeConfiguration (one call per item) / 2.0.1 SetVariables."""

    items: tuple[VariableSet, ...]


@dataclass(frozen=True, slots=True)
class VariableRef:
    variable: str
    component: str | None = None
    evse_id: int | None = None


@dataclass(frozen=True, slots=True)
class GetVariables:
    """1.6 GetConfiguration (empty = all keys) / 2.0.1 GetVariables."""

    items: tuple[VariableRef, ...] = ()


@dataclass(frozen=True, slots=True)
class GetBaseReport:
    """2.0.1 GetBaseReport; on 1.6 answered by GetConfiguration of all keys."""

    request_id: int = 1
    report_base: Literal["FullInventory", "ConfigurationInventory", "SummaryInventory"] = (
        "FullInventory"
    )


@dataclass(frozen=True, slots=True)
class TriggerMessage:
    message: str  # e.g. "StatusNotification", "MeterValues", "BootNotification", "Heartbeat"
    evse_id: int | None = None


@dataclass(frozen=True, slots=True)
class SchedulePeriod:
    start_s: int
    limit: float
    number_phases: int | None = None


@dataclass(frozen=True, slots=True)
class ChargingProfile:
    """A power or current limit schedule.

    `purpose`: "tx" (the running transaction), "tx_default" (default for new
    transactions) or "station_max" (cap for the whole station, evse_id 0).
    `unit`: "W" or "A". Negative limits mean discharge where the station supports it.
    """

    profile_id: int
    stack_level: int
    purpose: Literal["tx", "tx_default", "station_max"]
    unit: Literal["W", "A"]
    periods: tuple[SchedulePeriod, ...]
    kind: Literal["Absolute", "Relative", "Recurring"] = "Absolute"
    recurrency: Literal["Daily", "Weekly"] | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    duration_s: int | None = None
    start_schedule: datetime | None = None
    transaction_id: str | None = None
    min_rate: float | None = None


@dataclass(frozen=True, slots=True)
class SetChargingProfile:
    evse_id: int
    profile: ChargingProfile


@dataclass(frozen=True, slots=True)
class ClearChargingProfile:
    profile_id: int | None = None
    evse_id: int | None = None
    purpose: Literal["tx", "tx_default", "station_max"] | None = None
    stack_level: int | None = None


@dataclass(frozen=True, slots=True)
class GetCompositeSchedule:
    evse_id: int
    duration_s: int
    unit: Literal["W", "A"] | None = None


@dataclass(frozen=True, slots=True)
class Monitor:
    """A variable monitor (2.0.1 N04): notify on a `kind` condition of a component variable.

    `kind`: "Delta" (value = change that triggers), "Periodic" (value = seconds),
    "PeriodicClockAligned", "UpperThreshold", "LowerThreshold". `severity` 0 (danger)
    … 9 (debug); `transaction`: only active during a transaction. `monitor_id` set
    replaces that monitor.
    """

    component: str
    variable: str
    kind: str
    value: float
    severity: int = 8
    transaction: bool = False
    evse_id: int | None = None
    monitor_id: int | None = None


@dataclass(frozen=True, slots=True)
class GetMonitoringReport:
    """2.0.1 GetMonitoringReport (N02): the monitors arrive later in monitoring reports.

    `kinds` narrows to "Delta"/"Periodic"/"Threshold" monitors; `variables`
    narrows to these component variables.
    """

    request_id: int
    kinds: tuple[Literal["Delta", "Periodic", "Threshold"], ...] = ()
    variables: tuple[VariableRef, ...] = ()


@dataclass(frozen=True, slots=True)
class SetVariableMonitoring:
    """2.0.1 SetVariableMonitoring (N04); the result lists one outcome per item."""

    items: tuple[Monitor, ...]


@dataclass(frozen=True, slots=True)
class ClearVariableMonitoring:
    """2.0.1 ClearVariableMonitoring (N06) by monitor id."""

    monitor_ids: tuple[int, ...]


Command = (
    StartTransaction
    | StopTransaction
    | Reset
    | UnlockConnector
    | ChangeAvailability
    | SetVariables
    | GetVariables
    | GetBaseReport
    | TriggerMessage
    | SetChargingProfile
    | ClearChargingProfile
    | GetCompositeSchedule
    | GetMonitoringReport
    | SetVariableMonitoring
    | ClearVariableMonitoring
)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A station's answer. `status` is its status field ("Accepted", ...) when it has one."""

    status: str | None
    response: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0


class CommandError(Exception):
    """A command could not be completed; `reason` is a short machine-readable code."""

    reason = "error"


class StationNotConnected(CommandError):
    reason = "not_connected"


class CommandTimeout(CommandError):
    reason = "timeout"


class CommandRejected(CommandError):
    """The station answered with a CallError."""

    reason = "call_error"

    def __init__(self, code: str, description: str, details: dict[str, Any] | None = None):
        super().__init__(f"{code}: {description}")
        self.code, self.description, self.details = code, description, details or {}


class InvalidCommand(CommandError):
    """The command's parameters do not form a valid message for the station's protocol."""

    reason = "invalid"


class CommandNotSupported(CommandError):
    """The command has no equivalent in the station's protocol version."""

    reason = "not_supported"


class CommandPort(Protocol):
    """How the rest of evflex reaches stations. The gateway implements it for the
    stations connected to this process; a message-bus router can implement it for a
    multi-node deployment without callers noticing.
    """

    async def send(
        self,
        station_id: str,
        command: Command,
        *,
        priority: bool = False,
        timeout_s: float | None = None,
    ) -> CommandResult: ...

    def is_connected(self, station_id: str) -> bool: ...


# -- grid limits in batches ---------------------------------------------------------
class LimitOrder(NamedTuple):
    """One EVSE's grid limit within a batch (`LimitPort.send_limits`).

    A NamedTuple, not a dataclass: a fleet-wide step builds 10,000 of them on the
    latency path. `limit` is in `unit` (already rounded as it should go out); None
    clears the profile `profile_id` (release). `transaction_id` only with purpose "tx".
    """

    station_id: str
    evse_id: int
    profile_id: int
    limit: float | None
    unit: Literal["W", "A"] = "W"
    purpose: Literal["tx", "tx_default"] = "tx_default"
    transaction_id: str | None = None


make_limit_order = functools.partial(tuple.__new__, LimitOrder)
"""`make_limit_order((station_id, evse_id, profile_id, limit, unit, purpose, tx_id))`:
a LimitOrder from all seven fields at C speed (~0.2 µs; the NamedTuple constructor,
a Python function, takes ~0.7 µs: 7 ms of a 10,000-order step)."""


@dataclass(frozen=True, slots=True)
class LimitBatch:
    """What every limit of one batch shares: a single-period Absolute profile at
    `stack_level` from `start`, expiring at `valid_to`."""

    stack_level: int
    start: datetime
    valid_to: datetime


LimitOutcome = tuple[int, str | None, CommandError | None]
"""(index into the batch's orders, the station's status or None, the error or None):
exactly one of the last two is set, except an answer without a status (both None)."""


def limit_command(
    order: LimitOrder, batch: LimitBatch
) -> SetChargingProfile | ClearChargingProfile:
    """The version-neutral command an order stands for (one at a time, for ports that
    do not batch and for checking the batched frames against)."""
    if order.limit is None:
        return ClearChargingProfile(profile_id=order.profile_id)
    return SetChargingProfile(
        order.evse_id,
        ChargingProfile(
            profile_id=order.profile_id,
            stack_level=batch.stack_level,
            purpose=order.purpose,
            unit=order.unit,
            periods=(SchedulePeriod(0, order.limit),),
            start_schedule=batch.start,
            valid_to=batch.valid_to,
            transaction_id=order.transaction_id if order.purpose == "tx" else None,
        ),
    )


class LimitPort(CommandPort, Protocol):
    """A command port that also takes grid limits for many stations in one call."""

    def send_limits(
        self,
        orders: Sequence[LimitOrder],
        batch: LimitBatch,
        on_outcomes: Callable[[list[LimitOutcome]], None],
        *,
        timeout_s: float | None = None,
    ) -> asyncio.Future[None]:
        """Send every order now, in one pass and on the urgent lane (behind at most
        the call in flight at its station); return at once.

        Outcomes arrive through `on_outcomes`, never from inside this call, in
        batches of whatever settled since the last one (an answer does not wait for
        the slowest station). Every order gets exactly one outcome, within
        `timeout_s` (queueing included). The returned future resolves after the last
        `on_outcomes` call; cancelling it drops the orders still queued.
        """
        ...
