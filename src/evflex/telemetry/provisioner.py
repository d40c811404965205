"""Telemetry provisioning: on every boot and reconnect, make each station report power
the way the policy asks — read first, write only what is not in place.

* Stations speaking OCPP 1.6 are provisioned through configuration keys
  (`MeterValuesSampledData` ∋ Power.Active.Import, `MeterValueSampleInterval` =
  periodic s, PowerBank's `MeterValuePowerActiveImportDeltaTrigger` = delta W).
* Stations speaking OCPP 2.0.1 get a Delta and a Periodic monitor on EVSE.Power of
  each EVSE (N02 report first, N06 clear what no longer matches the policy, N04
  set what is missing); where the Periodic monitor cannot be had, the sampled-data
  settings (TxUpdatedMeasurands/TxUpdatedInterval) are the fallback.

Provisioning runs as background tasks, at most `concurrency` at a time, on the
routine command lane: it never holds up message handling or grid commands. Every
key's / monitor's outcome is kept (`results`) and published as a
"telemetry_provisioning" StationNotice, which the store records.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from evflex.fleet.commands import (
    ClearVariableMonitoring,
    CommandError,
    CommandNotSupported,
    CommandPort,
    CommandRejected,
    CommandResult,
    CommandTimeout,
    GetMonitoringReport,
    GetVariables,
    Monitor,
    SetVariableMonitoring,
    SetVariables,
    VariableRef,
    VariableSet,
)
from evflex.fleet.events import (
    Event,
    EventSink,
    StationBooted,
    StationConnected,
    StationNotice,
)
from evflex.fleet.model import Protocol
from evflex.fleet.state import FleetState
from evflex.telemetry.clock import utcnow
from evflex.telemetry.policy import Policy, Targets

log = logging.getLogger(__name__)

POWER = "Power.Active.Import"
DELTA_KEY = "MeterValuePowerActiveImportDeltaTrigger"
SAMPLED_KEY = "MeterValuesSampledData"
INTERVAL_KEY = "MeterValueSampleInterval"
SAMPLED_CTRLR = "SampledDataCtrlr"
# Telemetry is informational (severity 8 of 0..9) and the rules apply "during a
# charging transaction": the monitors are transaction monitors.
SEVERITY = 8
TRANSACTION = True
Requirement = Literal["delta", "periodic", "sampled", "cleanup"]
OK_STATUSES = frozenset({"InPlace", "Accepted"})


@dataclass(slots=True)
class Outcome:
    """What became of one key or monitor: InPlace (nothing sent), or the station's answer
    (Accepted, Rejected, RebootRequired, NotSupported, UnknownComponent, ...), or
    CallError:<code> / Timeout / NotConnected."""

    requirement: Requirement
    item: str  # configuration key, or e.g. "EVSE.1.Power.Delta"
    status: str
    value: str | None = None
    listed: bool | None = None  # 1.6: did GetConfiguration list the key?

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES


@dataclass(slots=True)
class Provisioning:
    station_id: str
    protocol: str
    targets: Targets
    started_at: datetime
    finished_at: datetime | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    writes: int = 0  # calls that changed something (0 = everything was in place)
    monitor_ids: list[int] = field(default_factory=list)
    error: str | None = None  # provisioning could not complete (e.g. station left)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["started_at"] = self.started_at.isoformat()
        d["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return d


class _Report:
    """Collects the parts of one monitoring report (N02) until the last one."""

    def __init__(self) -> None:
        self.monitors: list[dict[str, Any]] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Provisioner:
    """Hub subscriber + background service. `app.py` wires it; tests drive it directly."""

    def __init__(
        self,
        port: CommandPort,
        fleet: FleetState,
        sink: EventSink,
        policy: Policy,
        *,
        concurrency: int = 200,
        rate_per_s: float = 0.0,
        report_timeout_s: float = 10.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.port, self.fleet, self.sink, self.policy = port, fleet, sink, policy
        self.report_timeout_s = report_timeout_s
        self.results: dict[str, Provisioning] = {}
        self._clock = clock or utcnow
        self._limit = asyncio.Semaphore(concurrency)
        # pacing: station runs start at most `rate_per_s` a second (0 = unpaced), so a
        # fleet that connects at once is provisioned as steady background work
        self._interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self._next_start = 0.0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._reports: dict[tuple[str, int], _Report] = {}
        self._request_ids = itertools.count(1_000_001)
        self._idle = asyncio.Event()
        self._idle.set()
        self.runs = 0

    # -- hub subscriber (synchronous, cheap) ----------------------------------------
    def __call__(self, event: Event) -> None:
        kind = type(event)
        if kind is StationBooted:
            self.schedule(event.station_id)
        elif kind is StationConnected:
            station = self.fleet.stations.get(event.station_id)
            if station is not None and station.booted_at is not None:
                # a reconnect without a new boot: provision now; a boot that follows
                # is folded into this run (see schedule)
                self.schedule(event.station_id)
        elif kind is StationNotice:
            assert isinstance(event, StationNotice)
            if event.kind == "monitoring_report":
                self._on_report(event)

    def _on_report(self, ev: StationNotice) -> None:
        report = self._reports.get((ev.station_id, int(ev.data.get("request_id", -1))))
        if report is None:
            return
        report.monitors.extend(ev.data.get("monitors", ()))
        if not ev.data.get("more") and not report.done.done():
            report.done.set_result(None)

    # -- scheduling -------------------------------------------------------------------
    def schedule(self, station_id: str) -> None:
        task = self._tasks.get(station_id)
        if task is not None and not task.done():
            self._again.add(station_id)
            return
        self._idle.clear()
        self._tasks[station_id] = asyncio.get_running_loop().create_task(
            self._run(station_id), name=f"provision {station_id}"
        )

    async def _run(self, station_id: str) -> None:
        try:
            while True:
                self._again.discard(station_id)
                await self._pace()
                async with self._limit:
                    if self.port.is_connected(station_id):
                        try:
                            await self.provision(station_id)
                        except Exception:
                            log.exception("%s: telemetry provisioning failed", station_id)
                if station_id not in self._again:
                    break
        finally:
            if self._tasks.get(station_id) is asyncio.current_task():
                del self._tasks[station_id]
            if not self._tasks:
                self._idle.set()

    async def _pace(self) -> None:
        if not self._interval_s:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next_start)
        self._next_start = start + self._interval_s
        if start > now:
            await asyncio.sleep(start - now)  # a rate limit, not synchronisation

    async def wait_idle(self, timeout_s: float | None = None) -> None:
        """Until no provisioning is running (tests, demo, benchmark)."""
        await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._idle.set()

    async def set_policy(self, policy: Policy) -> None:
        """Adopt a new policy and re-provision every connected station (clears stale
        monitors, sets new ones)."""
        self.policy = policy
        for station_id, station in list(self.fleet.stations.items()):
            if station.connected and station.booted_at is not None:
                self.schedule(station_id)

    async def withdraw(self, station_id: str) -> None:
        """The station leaves grid service: clear the monitors we set (N06)."""
        result = self.results.pop(station_id, None)
        if result is None or not result.monitor_ids:
            return
        with contextlib.suppress(CommandError):
            await self.port.send(
                station_id, ClearVariableMonitoring(tuple(result.monitor_ids)), timeout_s=5.0
            )

    # -- provisioning -------------------------------------------------------------------
    async def provision(self, station_id: str) -> Provisioning:
        station = self.fleet.station(station_id)
        protocol = station.protocol
        targets = self.policy.for_station(station_id)
        result = Provisioning(
            station_id, str(protocol) if protocol else "unknown", targets, self._clock()
        )
        self.runs += 1
        try:
            if protocol is Protocol.OCPP16:
                await self._config_keys(station_id, targets, result)
            else:
                await self._monitors(station_id, targets, result)
        except CommandError as exc:
            result.error = _status_of(exc)
        result.finished_at = self._clock()
        self.results[station_id] = result
        self.sink(
            StationNotice(
                station_id, "telemetry_provisioning", result.finished_at, result.as_dict()
            )
        )
        return result

    # OCPP 1.6: configuration keys ------------------------------------------------------
    async def _config_keys(self, sid: str, t: Targets, result: Provisioning) -> None:
        read = await self.port.send(sid, GetVariables(()))
        known = {
            str(k.get("key")): k.get("value") for k in read.response.get("configurationKey", ())
        }
        sampled = [v.strip() for v in (known.get(SAMPLED_KEY) or "").split(",") if v.strip()]
        wanted: list[tuple[Requirement, str, str, bool]] = [
            ("sampled", SAMPLED_KEY, ",".join([*sampled, POWER]), POWER in sampled),
            (
                "periodic",
                INTERVAL_KEY,
                str(t.periodic_s),
                known.get(INTERVAL_KEY) == str(t.periodic_s),
            ),
            ("delta", DELTA_KEY, str(t.delta_w), known.get(DELTA_KEY) == str(t.delta_w)),
        ]
        for requirement, key, value, in_place in wanted:
            listed = key in known
            if in_place:
                result.outcomes.append(Outcome(requirement, key, "InPlace", known[key], listed))
                continue
            status = await self._write(sid, SetVariables((VariableSet(key, value),)), result)
            result.outcomes.append(Outcome(requirement, key, status, value, listed))

    async def _write(self, sid: str, command: Any, result: Provisioning) -> str:
        result.writes += 1
        try:
            answer: CommandResult = await self.port.send(sid, command)
        except CommandError as exc:
            if isinstance(exc, CommandTimeout | CommandRejected | CommandNotSupported):
                return _status_of(exc)
            raise
        return answer.status or "Unknown"

    # OCPP 2.0.1: monitors -------------------------------------------------------------
    async def _monitors(self, sid: str, t: Targets, result: Provisioning) -> None:
        # Without a report (N02 unsupported) the monitors are set anyway: a station may
        # implement N04 without N02, and "Duplicate" then tells what is there.
        existing = await self._report(sid)
        evse_ids = sorted(e for e in self.fleet.station(sid).evses if e > 0) or [1]
        wants: list[tuple[Requirement, str, float]] = [
            ("delta", "Delta", float(t.delta_w)),
            ("periodic", "Periodic", float(t.periodic_s)),
        ]
        await self._set_monitors(sid, existing, evse_ids, wants, result)
        periodic_ok = any(o.ok for o in result.outcomes if o.requirement == "periodic")
        if not periodic_ok:
            await self._sampled_data(sid, t, result)

    async def _report(self, sid: str) -> list[dict[str, Any]]:
        """The Delta and Periodic monitors on EVSE.Power the station reports (N02)."""
        request_id = next(self._request_ids)
        report = self._reports[(sid, request_id)] = _Report()
        try:
            try:
                answer = await self.port.send(
                    sid,
                    GetMonitoringReport(
                        request_id, ("Delta", "Periodic"), (VariableRef("Power", "EVSE"),)
                    ),
                )
            except CommandRejected:
                return []
            if answer.status == "Accepted":
                try:
                    await asyncio.wait_for(asyncio.shield(report.done), self.report_timeout_s)
                except TimeoutError:
                    log.warning("%s: monitoring report %d incomplete", sid, request_id)
            return [
                m
                for m in report.monitors
                if m.get("component") == "EVSE" and m.get("variable") == "Power"
            ]
        finally:
            del self._reports[(sid, request_id)]

    async def _set_monitors(
        self,
        sid: str,
        existing: list[dict[str, Any]],
        evse_ids: list[int],
        wants: list[tuple[Requirement, str, float]],
        result: Provisioning,
    ) -> None:
        to_clear: list[int] = []
        to_set: list[tuple[Requirement, Monitor]] = []
        for evse_id in evse_ids:
            for requirement, kind, value in wants:
                same_kind = [
                    m for m in existing if m.get("evse_id") == evse_id and m["kind"] == kind
                ]
                keep = next(
                    (
                        m
                        for m in same_kind
                        if float(m["value"]) == value
                        and m["severity"] == SEVERITY
                        and bool(m["transaction"]) is TRANSACTION
                    ),
                    None,
                )
                to_clear += [int(m["monitor_id"]) for m in same_kind if m is not keep]
                if keep is not None:
                    result.monitor_ids.append(int(keep["monitor_id"]))
                    result.outcomes.append(
                        Outcome(requirement, f"EVSE.{evse_id}.Power.{kind}", "InPlace", str(value))
                    )
                else:
                    monitor = Monitor("EVSE", "Power", kind, value, SEVERITY, TRANSACTION, evse_id)
                    to_set.append((requirement, monitor))
        if to_clear:
            status = await self._write(sid, ClearVariableMonitoring(tuple(to_clear)), result)
            result.outcomes.append(Outcome("cleanup", f"clear:{sorted(to_clear)}", status))
        if not to_set:
            return
        result.writes += 1
        try:
            answer = await self.port.send(sid, SetVariableMonitoring(tuple(m for _, m in to_set)))
            statuses: list[dict[str, Any]] = list(answer.response.get("results", ()))
        except CommandRejected as exc:
            statuses = [{"status": f"CallError:{exc.code}"}] * len(to_set)
        except CommandTimeout:
            statuses = [{"status": "Timeout"}] * len(to_set)
        statuses += [{"status": "Unknown"}] * (len(to_set) - len(statuses))
        for (requirement, m), r in zip(to_set, statuses, strict=False):
            item = f"EVSE.{m.evse_id}.Power.{m.kind}"
            result.outcomes.append(Outcome(requirement, item, str(r["status"]), str(m.value)))
            if r["status"] == "Accepted" and r.get("monitor_id") is not None:
                result.monitor_ids.append(int(r["monitor_id"]))

    async def _sampled_data(self, sid: str, t: Targets, result: Provisioning) -> None:
        """Fallback for periodic reporting: TxUpdatedMeasurands ∋ Power, TxUpdatedInterval."""
        names = ("TxUpdatedMeasurands", "TxUpdatedInterval")
        try:
            read = await self.port.send(
                sid, GetVariables(tuple(VariableRef(n, SAMPLED_CTRLR) for n in names))
            )
            values = {
                r["variable"]["name"]: r.get("attributeValue")
                for r in read.response.get("getVariableResult", ())
            }
        except (CommandRejected, CommandTimeout):
            values = {}
        measurands = [v.strip() for v in (values.get(names[0]) or "").split(",") if v.strip()]
        interval = str(t.periodic_s)
        wanted: list[tuple[str, str, bool, Requirement]] = [
            (names[0], ",".join([*measurands, POWER]), POWER in measurands, "sampled"),
            (names[1], interval, values.get(names[1]) == interval, "periodic"),
        ]
        for name, value, in_place, requirement in wanted:
            item = f"{SAMPLED_CTRLR}.{name}"
            if in_place:
                result.outcomes.append(Outcome(requirement, item, "InPlace", value))
                continue
            command = SetVariables((VariableSet(name, value, SAMPLED_CTRLR),))
            status = await self._write(sid, command, result)
            result.outcomes.append(Outcome(requirement, item, status, value))


def _status_of(exc: CommandError) -> str:
    if isinstance(exc, CommandRejected):
        return f"CallError:{exc.code}"
    if isinstance(exc, CommandTimeout):
        return "Timeout"
    return {"not_connected": "NotConnected", "not_supported": "NotSupported"}.get(
        exc.reason, exc.reason
    )
