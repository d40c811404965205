"""The grid-service engine: the one async loop of `control/`.

Frequency samples (from any `FrequencySource`) and a 1 s tick drive one evaluation:

    feed health → each active service's ΔP (W) → Σ ΔP → allocation → minimal commands
    → SetChargingProfile / ClearChargingProfile through a `CommandPort`, urgent lane.

Safety: every limit carries `valid_to` = now + `valid_for_s` (renewed while it stays
in force), so a curtailment lifts by itself if evflex dies. An unusable feed
(stale, implausible, recovering) gates the frequency services to "no response",
which releases their curtailments. Idempotent: the limits believed in force are
remembered (`apply_commands`), so re-evaluating the same state sends nothing.

The baseline (each EVSE's power just before activation) is captured when the first
service activates and kept until the last one ends; services started meanwhile share
it. Each service keeps 1 s records (frequency, target, measured, baseline) and the
engine keeps an audit of every control action with the station's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from evflex.control.allocation import Command as LimitCommand
from evflex.control.allocation import Plan, apply_commands, evaluate, prepare
from evflex.control.availability import Flexibility, flexibility, p90_w
from evflex.control.baseline import Baseline, capture_baseline
from evflex.control.ffr import FfrParams, FfrState, ffr_step
from evflex.control.services import (
    DroopCurve,
    Setpoint,
    droop_delta_w,
    fcr_delta_w,
    frequency_gate,
    setpoint_delta_w,
)
from evflex.control.units import Key, Unit, units_from_fleet
from evflex.fleet.commands import (
    ChargingProfile,
    ClearChargingProfile,
    CommandError,
    CommandPort,
    SchedulePeriod,
    SetChargingProfile,
)
from evflex.fleet.state import FleetState
from evflex.grid.health import FeedHealth, HealthParams, assess, observe
from evflex.grid.samples import FrequencySample, FrequencySource

log = logging.getLogger(__name__)

ServiceKind = Literal["fcr", "setpoint", "droop_curve", "ffr"]


@dataclass(frozen=True, slots=True)
class Fcr:
    bid_w: float
    deadband_hz: float = 0.010
    full_dev_hz: float = 0.200

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bid_w) and self.bid_w > 0):
            raise ValueError("FCR bid_w must be a finite power > 0 W")


ServiceParams = Fcr | Setpoint | DroopCurve | FfrParams


@dataclass(frozen=True, slots=True)
class EngineConfig:
    profile_id_base: int = 880_000  # evflex's limit on EVSE e is profile base + e
    stack_level: int = 8  # above everyday profiles (0–2), within common station maxima
    valid_for_s: float = 900.0  # every limit expires by itself after this (s)
    renew_before_s: float = 300.0  # renew a limit when less than this is left (s)
    threshold_w: float = 200.0  # smaller changes of a limit are not sent
    tick_s: float = 1.0  # staleness, setpoint windows, renewal and records
    command_timeout_s: float = 10.0
    retry_after_s: float = 10.0  # a refused or failed limit is not resent before this (s)
    health: HealthParams = field(default_factory=HealthParams)
    audit_size: int = 10_000


@dataclass(frozen=True, slots=True)
class RecordRow:
    """One row of a service's 1 s record. Powers in W (load convention)."""

    ts: datetime
    freq_hz: float | None
    feed: str
    delta_w: float  # this service's share of the portfolio ΔP
    target_w: float  # portfolio: baseline + Σ ΔP of the active services
    measured_w: float
    baseline_w: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One control action: when, for which services, why, the limit and the answer."""

    at: datetime
    services: tuple[str, ...]
    station_id: str
    evse_id: int
    action: Literal["set", "renew", "release"]
    reason: str
    limit_w: float | None
    outcome: str  # the station's status ("Accepted", ...) or an error reason
    detail: str | None = None


@dataclass(slots=True)
class ActiveService:
    id: str
    kind: ServiceKind
    params: ServiceParams
    started_at: datetime
    baseline_w: float
    stopped_at: datetime | None = None
    ffr: FfrState = field(default_factory=FfrState)
    ffr_w: float = 0.0  # the FFR machine's last output, before the feed gate
    delta_w: float = 0.0  # this service's contribution to the portfolio ΔP
    records: list[RecordRow] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.stopped_at is None


@dataclass(frozen=True, slots=True)
class GridState:
    freq_hz: float | None
    feed: FeedHealth
    services: tuple[ActiveService, ...]
    baseline_w: float | None
    delta_w: float
    target_w: float | None
    measured_w: float
    limits: int
    flexibility: Flexibility
    p90_down_w: float
    p90_up_w: float


def _fcr(p: Fcr, freq_hz: float) -> float:
    return fcr_delta_w(freq_hz, p.bid_w, deadband_hz=p.deadband_hz, full_dev_hz=p.full_dev_hz)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Engine:
    """Holds active services and keeps the fleet's limits in line with them."""

    def __init__(
        self,
        port: CommandPort,
        fleet: FleetState,
        config: EngineConfig = EngineConfig(),
        *,
        wall: Callable[[], datetime] = _utcnow,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port, self.fleet, self.config = port, fleet, config
        self.wall, self.mono = wall, mono
        self.health = FeedHealth()
        self.services: dict[str, ActiveService] = {}
        self.baseline: Baseline | None = None
        self.plan: Plan | None = None
        self.limits: dict[Key, float] = {}  # limits believed in force
        self.expires: dict[Key, float] = {}  # monotonic expiry of each limit
        self.backoff: dict[Key, float] = {}  # monotonic time a failed limit may be retried
        self.audit: deque[AuditEntry] = deque(maxlen=config.audit_size)
        self.delta_w = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._runners: list[asyncio.Task[None]] = []
        self.listeners: list[Callable[[], None]] = []  # told after every evaluation
        self.on_record: Callable[[str, RecordRow], None] | None = None  # storage hooks
        self.on_audit: Callable[[AuditEntry], None] | None = None

    # -- lifecycle ----------------------------------------------------------------
    def start(self, *sources: FrequencySource) -> None:
        loop = asyncio.get_running_loop()
        self._runners = [loop.create_task(self._consume(s)) for s in sources]
        self._runners.append(loop.create_task(self._tick()))

    async def stop(self) -> None:
        """Stop the loops and release every limit (best effort; expiry covers the rest)."""
        for task in self._runners:
            task.cancel()
        for task in self._runners:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._dispatch([(sid, eid, None) for sid, eid in self.limits], "shutdown", ())
        await self.drain()

    async def drain(self) -> None:
        """Wait for the commands in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _consume(self, source: FrequencySource) -> None:
        try:
            async for sample in source:
                self.on_sample(sample)
        except Exception:
            log.exception("frequency source %r failed; the feed will go stale", source)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            try:
                self.tick()
            except Exception:
                log.exception("grid engine tick failed")

    # -- services -----------------------------------------------------------------
    def activate(self, kind: ServiceKind, params: ServiceParams) -> ActiveService:
        now = self.wall()
        if self.baseline is None:
            self.baseline = capture_baseline(self.fleet, now)
            self._replan(now)
        service_id = f"svc-{uuid.uuid4().hex[:12]}"  # unique across restarts (stored rows)
        service = ActiveService(service_id, kind, params, now, self.baseline.total_w)
        self.services[service.id] = service
        self.evaluate("activate " + service.id)
        return service

    def deactivate(self, service_id: str) -> ActiveService | None:
        service = self.services.get(service_id)
        if service is None or not service.active:
            return service
        service.stopped_at = self.wall()
        service.delta_w = 0.0
        self.evaluate("deactivate " + service_id, also=service_id)
        if not self.active_services():
            self.baseline, self.plan = None, None
        return service

    def active_services(self) -> list[ActiveService]:
        return [s for s in self.services.values() if s.active]

    # -- inputs -------------------------------------------------------------------
    def on_sample(self, sample: FrequencySample) -> None:
        self.health = observe(self.health, sample, self.mono(), self.config.health)
        if self.health.ok:
            for service in self.active_services():
                if isinstance(service.params, FfrParams):
                    service.ffr, service.ffr_w = ffr_step(service.ffr, sample, service.params)
        self.evaluate("frequency")

    def tick(self) -> None:
        self.health = assess(self.health, self.mono(), self.config.health)
        now = self.wall()
        for service in self.active_services():
            p = service.params
            if isinstance(p, Setpoint) and now.timestamp() >= p.valid_to_ts:
                self.deactivate(service.id)
        if self.baseline is not None:
            self._replan(now)
        self.evaluate("tick")
        self._renew()
        self._record(now)

    # -- evaluation ---------------------------------------------------------------
    def evaluate(self, reason: str, *, also: str | None = None) -> list[LimitCommand]:
        """Bring the limits in line with the services' ΔP; returns the commands sent."""
        self.delta_w = sum(self._service_delta(s) for s in self.active_services())
        if self.plan is None:
            cmds: list[LimitCommand] = [(sid, eid, None) for sid, eid in self.limits]
        else:
            cmds = evaluate(self.plan, self.delta_w, self.limits, self.config.threshold_w)
        if not self.health.ok and reason in ("tick", "frequency") and self._frequency_services():
            reason = f"feed {self.health.status}: {self.health.reason}"
        tags = tuple(s.id for s in self.active_services()) + ((also,) if also else ())
        self._dispatch(cmds, reason, tags)
        for listener in self.listeners:
            listener()
        return cmds

    def _frequency_services(self) -> bool:
        return any(s.kind != "setpoint" for s in self.active_services())

    def _service_delta(self, service: ActiveService) -> float:
        p = service.params
        f = self.health.freq_hz
        delta: float | None
        if isinstance(p, Fcr):
            delta = frequency_gate(self.health, None if f is None else _fcr(p, f))
        elif isinstance(p, DroopCurve):
            delta = frequency_gate(self.health, None if f is None else droop_delta_w(p, f))
        elif isinstance(p, FfrParams):
            delta = frequency_gate(self.health, service.ffr_w)
        else:
            base = self.baseline.total_w if self.baseline is not None else 0.0
            delta = setpoint_delta_w(p, base, self.wall().timestamp())
        service.delta_w = delta or 0.0
        return service.delta_w

    def _replan(self, now: datetime) -> None:
        assert self.baseline is not None
        units = self._units(now)
        self.plan = prepare(units)

    def _units(self, now: datetime) -> list[Unit]:
        base = self.baseline.power_w if self.baseline is not None else {}
        return units_from_fleet(self.fleet, base, {}, {}, now.timestamp())

    # -- dispatch -----------------------------------------------------------------
    def _dispatch(self, cmds: Iterable[LimitCommand], reason: str, tags: tuple[str, ...]) -> None:
        """One pass: a task per command, so no station waits for another's answer."""
        now = self.mono()
        cmds = [c for c in cmds if c[2] is None or self.backoff.get(c[:2], now) <= now]
        if not cmds:
            return
        self.limits = apply_commands(self.limits, cmds)
        expiry = now + self.config.valid_for_s
        loop = asyncio.get_running_loop()
        for sid, eid, limit in cmds:
            action: Literal["set", "release"] = "release" if limit is None else "set"
            if limit is None:
                self.expires.pop((sid, eid), None)
            else:
                self.expires[(sid, eid)] = expiry
            task = loop.create_task(self._send(sid, eid, limit, action, reason, tags))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _renew(self) -> None:
        """Resend limits whose expiry is near, so an active service never lapses."""
        now = self.mono()
        due = [k for k, t in self.expires.items() if t - now < self.config.renew_before_s]
        loop = asyncio.get_running_loop()
        for key in due:
            limit = self.limits.get(key)
            if limit is None:
                continue
            self.expires[key] = now + self.config.valid_for_s
            tags = tuple(s.id for s in self.active_services())
            task = loop.create_task(self._send(*key, limit, "renew", "expiry renewal", tags))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(
        self,
        station_id: str,
        evse_id: int,
        limit_w: float | None,
        action: Literal["set", "renew", "release"],
        reason: str,
        tags: tuple[str, ...],
    ) -> None:
        profile_id = self.config.profile_id_base + evse_id
        command: SetChargingProfile | ClearChargingProfile
        if limit_w is None:
            command = ClearChargingProfile(profile_id=profile_id)
        else:
            command = SetChargingProfile(evse_id, self._profile(station_id, evse_id, limit_w))
        try:
            result = await self.port.send(
                station_id, command, priority=True, timeout_s=self.config.command_timeout_s
            )
            outcome, detail = result.status or "answered", None
        except CommandError as exc:
            outcome, detail = exc.reason, str(exc)
        key = (station_id, evse_id)
        if limit_w is not None and outcome != "Accepted" and self.limits.get(key) == limit_w:
            # not in force: forget it so the next evaluation tries again
            self.limits.pop(key, None)
            self.expires.pop(key, None)
            self.backoff[key] = self.mono() + self.config.retry_after_s
        entry = AuditEntry(
            self.wall(), tags, station_id, evse_id, action, reason, limit_w, outcome, detail
        )
        self.audit.append(entry)
        if self.on_audit is not None:
            self.on_audit(entry)

    def _profile(self, station_id: str, evse_id: int, limit_w: float) -> ChargingProfile:
        """A W limit on the running transaction (else the EVSE's default), always expiring."""
        now = self.wall()
        station = self.fleet.stations.get(station_id)
        evse = station.evses.get(evse_id) if station is not None else None
        tx = evse.transaction if evse is not None else None
        return ChargingProfile(
            profile_id=self.config.profile_id_base + evse_id,
            stack_level=self.config.stack_level,
            purpose="tx" if tx is not None else "tx_default",
            unit="W",
            periods=(SchedulePeriod(0, round(limit_w, 1)),),
            start_schedule=now,
            valid_to=now + timedelta(seconds=self.config.valid_for_s),
            transaction_id=tx.transaction_id if tx is not None else None,
        )

    # -- records and state --------------------------------------------------------
    def _record(self, now: datetime) -> None:
        measured = self.fleet.summary().power_w
        base = self.baseline.total_w if self.baseline is not None else measured
        for service in self.active_services():
            row = RecordRow(
                now,
                self.health.freq_hz,
                self.health.status.value,
                service.delta_w,
                base + self.delta_w,  # the portfolio target all services add up to
                measured,
                base,
            )
            service.records.append(row)
            if self.on_record is not None:
                self.on_record(service.id, row)

    def state(self, period_s: float = 900.0) -> GridState:
        now = self.wall()
        units = self._units(now)
        measured = self.fleet.summary().power_w
        base = self.baseline.total_w if self.baseline is not None else None
        return GridState(
            freq_hz=self.health.last.freq_hz if self.health.last is not None else None,
            feed=self.health,
            services=tuple(self.services.values()),
            baseline_w=base,
            delta_w=self.delta_w,
            target_w=None if base is None else base + self.delta_w,
            measured_w=measured,
            limits=len(self.limits),
            flexibility=flexibility(units),
            p90_down_w=p90_w(units, {}, now.timestamp(), period_s, direction="down"),
            p90_up_w=p90_w(units, {}, now.timestamp(), period_s, direction="up"),
        )
