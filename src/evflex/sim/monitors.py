"""OCPP 2.0.1 variable monitors (N04 set, N06 clear, N02 report, N07/N08 events).

Only EVSE.Power supports monitoring here, which is what the PowerBank rules
ask for: Delta and Periodic monitors on the Power of each EVSE, evaluated on
every local measurement (once a second). Semantics (2.0.1 Part 2, MonitorEnumType):

- Delta: "Triggers an event notice when the actual value has changed more than
  plus or minus Value since the time that this monitor was set or since the
  last time this event notice was sent, whichever was last."
- Periodic: "Triggers an event notice every Value seconds interval, starting
  from the time that this monitor was set."
- PeriodicClockAligned: every Value seconds, aligned to the clock.
- UpperThreshold / LowerThreshold: an event when the value crosses the limit,
  and a `cleared` event when it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from evflex.sim.catalogue import Model, Monitoring
from evflex.sim.devicemodel import DeviceModel

_PERIODIC = ("Periodic", "PeriodicClockAligned")
_CRITERIA = {
    "ThresholdMonitoring": ("UpperThreshold", "LowerThreshold"),
    "DeltaMonitoring": ("Delta",),
    "PeriodicMonitoring": _PERIODIC,
}


@dataclass(slots=True)
class Monitor:
    id: int
    component: dict[str, Any]
    variable: dict[str, Any]
    evse: int
    type: str
    value: float
    severity: int
    transaction: bool
    reference: float = 0.0  # Delta: value at the last event
    next_at: float = 0.0  # Periodic: next event time
    exceeded: bool = False  # Thresholds: currently beyond the limit

    def as_report(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transaction": self.transaction,
            "value": self.value,
            "type": self.type,
            "severity": self.severity,
        }


class Monitors:
    __slots__ = ("_by_evse", "_model", "_next_id", "level", "monitors")

    def __init__(self, model: Model) -> None:
        self._model = model
        self.monitors: dict[int, Monitor] = {}
        self._by_evse: dict[int, list[Monitor]] = {}
        self._next_id = 1
        self.level = 9  # SetMonitoringLevel: report severities 0..level

    def for_evse(self, evse: int) -> list[Monitor]:
        return self._by_evse.get(evse, [])

    def set(
        self, item: dict[str, Any], dm: DeviceModel, now: float, current: float
    ) -> dict[str, Any]:
        """One SetMonitoringResult for one SetMonitoringData."""
        out = {k: item[k] for k in ("type", "severity", "component", "variable")}
        status = self._check(item, dm)
        if status is not None:
            return {**out, "status": status}
        mid = item.get("id")
        if mid is None:
            mid, self._next_id = self._next_id, self._next_id + 1
        monitor = Monitor(
            mid,
            item["component"],
            item["variable"],
            item["component"]["evse"]["id"],
            item["type"],
            float(item["value"]),
            item["severity"],
            bool(item.get("transaction")),
            reference=current,
            next_at=_first_period(item["type"], float(item["value"]), now),
        )
        self.monitors[mid] = monitor
        self._reindex()
        return {**out, "id": mid, "status": "Accepted"}

    def _check(self, item: dict[str, Any], dm: DeviceModel) -> str | None:
        found = dm.find(item["component"], item["variable"])
        if isinstance(found, str):
            return found
        kind, value = item["type"], float(item["value"])
        if not found.monitorable:
            return "Rejected"
        if self._model.monitoring is Monitoring.PERIODIC and kind not in _PERIODIC:
            return "UnsupportedMonitorType"
        if (kind == "Delta" and value < self._model.min_delta_w) or (
            kind in _PERIODIC and value < self._model.min_periodic_s
        ):
            return "Rejected"  # below what this firmware measures or reports
        mid = item.get("id")
        if mid is not None:
            return None if mid in self.monitors else "Rejected"
        same = (item["component"], item["variable"], kind, item["severity"])
        if any(
            (m.component, m.variable, m.type, m.severity) == same for m in self.monitors.values()
        ):
            return "Duplicate"
        return None

    def clear(self, ids: list[int]) -> list[dict[str, Any]]:
        results = []
        for mid in ids:
            found = self.monitors.pop(mid, None)
            results.append({"id": mid, "status": "Accepted" if found else "NotFound"})
        self._reindex()
        return results

    def clear_all(self) -> None:
        self.monitors.clear()
        self._reindex()

    def report(
        self, criteria: list[str] | None, targets: list[dict[str, Any]] | None
    ) -> list[dict[str, Any]]:
        """MonitoringData entries for NotifyMonitoringReport (N02)."""
        types = {t for c in (criteria or _CRITERIA) for t in _CRITERIA[c]}
        grouped: dict[tuple[str, str], dict[str, Any]] = {}
        for m in self.monitors.values():
            if m.type not in types or not _wanted(m, targets):
                continue
            key = (repr(m.component), repr(m.variable))
            entry = grouped.setdefault(
                key, {"component": m.component, "variable": m.variable, "variableMonitoring": []}
            )
            entry["variableMonitoring"].append(m.as_report())
        return list(grouped.values())

    def _reindex(self) -> None:
        by_evse: dict[int, list[Monitor]] = {}
        for m in self.monitors.values():
            by_evse.setdefault(m.evse, []).append(m)
        self._by_evse = by_evse


def _first_period(kind: str, value: float, now: float) -> float:
    if kind == "Periodic":
        return now + value
    if kind == "PeriodicClockAligned" and value > 0:
        return math.floor(now / value) * value + value
    return 0.0


def _wanted(m: Monitor, targets: list[dict[str, Any]] | None) -> bool:
    if not targets:
        return True
    for t in targets:
        comp = t["component"]
        if comp["name"] != m.component["name"]:
            continue
        if "evse" in comp and comp["evse"].get("id") != m.evse:
            continue
        if "variable" in t and t["variable"]["name"] != m.variable["name"]:
            continue
        return True
    return False


def evaluate(m: Monitor, value: float, now: float, in_tx: bool) -> str | None:
    """The trigger ("Delta", "Periodic", "Alerting") if `m` fires now, else None."""
    if m.transaction and not in_tx:
        return None
    kind = m.type
    if kind == "Delta":
        if abs(value - m.reference) >= m.value:
            m.reference = value
            return "Delta"
        return None
    if kind in _PERIODIC:
        if now + 0.5 >= m.next_at:  # half a tick early is on time
            m.next_at += m.value
            if m.next_at <= now:  # fell behind: start afresh rather than burst
                m.next_at = now + m.value
            return "Periodic"
        return None
    beyond = value > m.value if kind == "UpperThreshold" else value < m.value
    if beyond != m.exceeded:
        m.exceeded = beyond
        return "Alerting"
    return None
