"""The grid-service engine: the one async loop of `control/`.

Frequency samples (from any `FrequencySource`) and a 1 s tick drive one evaluation:

    feed health → each active service's ΔP (W) → Σ ΔP → allocation → minimal commands
    → SetChargingProfile / ClearChargingProfile through a `LimitPort`, urgent lane,
    all of an evaluation's commands in one `send_limits` call (no task per command).

Latency: a fleet-wide step (10,000 EVSEs) must reach the port in a few ms, so the
per-unit work moves to the re-plan (the 1 s tick): the allocation's first pass and
each of its moves' `LimitOrder` are built there, and a step hands over a slice of
them after one check that no transaction changed since. The engine's own records
(limits, expiries, baselines, what each answer is judged by) follow the hand-over,
in bulk dict operations. The re-plan itself, when only its timer makes it due, is
spread over event-loop turns of a few ms each (`Engine._replan_sliced`).

Safety: every limit carries `valid_to` = now + `valid_for_s` (renewed while it stays
in force), so a curtailment lifts by itself if evflex dies. An unusable feed
(stale, implausible, recovering) gates the frequency services to "no response",
which releases their curtailments. Idempotent: the limits believed in force are
remembered (folded in as `allocation.apply_commands` describes), so re-evaluating
the same state sends nothing.

The baseline (each EVSE's power just before activation) is captured when the first
service activates and kept until the last one ends; services started meanwhile share
it. Each service keeps 1 s records (frequency, target, measured, baseline) and the
engine keeps an audit of every control action with the station's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import compress, filterfalse, islice, repeat, starmap, takewhile
from operator import is_
from typing import Any, Literal

from evflex.control.allocation import Command as LimitCommand
from evflex.control.allocation import (
    Commands,
    Pass,
    Plan,
    command_list,
    minimal,
    moves,
    prepare,
    prepare_steps,
)
from evflex.control.availability import Flexibility, flexibility, p90_w
from evflex.control.baseline import Baseline, capture_baseline
from evflex.control.ffr import FfrParams, FfrState, ffr_step
from evflex.control.response import (
    Expectation,
    ModelResponse,
    ResponseParams,
    expected_delay_s,
    judge,
    model_key,
    needs_check,
    tolerance_w,
)
from evflex.control.services import (
    DroopCurve,
    Setpoint,
    droop_delta_w,
    fcr_delta_w,
    frequency_gate,
    setpoint_delta_w,
)
from evflex.control.units import (
    EvseSpec,
    Key,
    SessionInfo,
    Unit,
    UnitCollection,
    UnitMemo,
    session_from_needs,
    w_to_a,
)
from evflex.fleet.commands import (
    LimitBatch,
    LimitOrder,
    LimitOutcome,
    LimitPort,
    make_limit_order,
)
from evflex.fleet.events import (
    ChargingNeedsReported,
    StationConnected,
    StationDisconnected,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)
from evflex.fleet.model import Evse, Station, Transaction
from evflex.fleet.state import FleetState
from evflex.grid.health import FeedHealth, HealthParams, assess, observe
from evflex.grid.samples import FrequencySample, FrequencySource

log = logging.getLogger(__name__)

ServiceKind = Literal["fcr", "setpoint", "droop_curve", "ffr"]
Action = Literal["set", "renew", "release", "fallback", "non_responding"]

# How a limit is expressed, tried in this order when a station refuses one: the
# purpose that fits (tx with a transaction, else tx_default) in W, the same in A
# (many 1.6 chargers only take amps), then the other purpose in W and A.
Variant = tuple[Literal["W", "A"], Literal["natural", "other"]]
VARIANTS: tuple[Variant, ...] = (("W", "natural"), ("A", "natural"), ("W", "other"), ("A", "other"))
_REFUSALS = frozenset({"Rejected", "call_error", "not_supported", "invalid"})


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
    replan_interval_s: float = 5.0  # rebuild the units at least this often (s)
    # a periodic re-plan collects the units of about this many EVSEs per event-loop
    # turn (~7 ms at 2,000 when all their meters moved); 0: in one turn
    replan_slice_evses: int = 2_000
    command_timeout_s: float = 10.0
    retry_after_s: float = 10.0  # a refused or failed limit is not resent before this (s)
    health: HealthParams = field(default_factory=HealthParams)
    response: ResponseParams = field(default_factory=ResponseParams)
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


UnitRow = tuple[datetime, str, int, float, float | None, float | None]
"""One unit's second in a record: (ts, station_id, evse_id, baseline_w, target_w,
measured_w) — its meter-before baseline, evflex's limit on it (None while it recovers
after a release) and its measured power (W). A tuple: 10,000 of them a second."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One control action: when, for which services, why, the limit and the answer."""

    at: datetime
    services: tuple[str, ...]
    station_id: str
    evse_id: int
    action: Action
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
    non_responding: int
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
        port: LimitPort,
        fleet: FleetState,
        config: EngineConfig = EngineConfig(),
        *,
        wall: Callable[[], datetime] = _utcnow,
        mono: Callable[[], float] = time.monotonic,
        specs: Mapping[Key, EvseSpec] | None = None,
        sessions: Mapping[Key, SessionInfo] | None = None,
        model_specs: Mapping[tuple[str, str], EvseSpec] | None = None,
    ) -> None:
        self.port, self.fleet, self.config = port, fleet, config
        self.wall, self.mono = wall, mono
        self.specs: dict[Key, EvseSpec] = dict(specs) if specs is not None else {}
        self.sessions: Mapping[Key, SessionInfo] = sessions if sessions is not None else {}
        self.model_specs: Mapping[tuple[str, str], EvseSpec] = model_specs or {}
        self.health = FeedHealth()
        self.services: dict[str, ActiveService] = {}
        self.baseline: Baseline | None = None  # the fleet just before the first activation
        self.plan: Plan | None = None
        self.limits: dict[Key, float] = {}  # limits believed in force
        self.expires: dict[Key, float] = {}  # monotonic expiry of each limit
        self.backoff: dict[Key, float] = {}  # monotonic time a failed limit may be retried
        # closed loop: per-unit meter-before baseline of the units evflex controls, the
        # reductions waiting to show in the measurements, units not counted on any more
        self.unit_base: dict[Key, float] = {}
        self._unit_evse: dict[Key, Evse | None] = {}  # their Evse objects (stable), for speed
        self.released_at: dict[Key, float] = {}
        self.expect: dict[Key, Expectation] = {}
        self.non_responding: dict[Key, float] = {}  # key → monotonic time to retry it
        self.variant: dict[Key, int] = {}  # index into VARIANTS that the station takes
        self.models: dict[str, ModelResponse] = {}
        # station → EVSE → why it is not counted on / how it takes limits
        self.unit_reasons: dict[str, dict[int, str]] = {}
        self.audit: deque[AuditEntry] = deque(maxlen=config.audit_size)
        self.delta_w = 0.0
        self.evaluations = 0
        self.evaluation_s = 0.0  # cumulative time spent in evaluate()
        # the last evaluation that sent commands: targets → the port's pass returned
        # (for idle stations: every frame written), and how many commands it sent
        self.last_dispatch_s = 0.0
        self.last_dispatch_commands = 0
        self._dirty = False  # limits or baselines changed since the last snapshot
        # re-planning (units from the whole fleet, O(n log n)) only when the fleet or
        # the closed loop changed, or every replan_interval_s; evaluation skipped when
        # nothing it depends on changed (plan, ΔP, limits)
        self._plan_stale = True
        self._planned_at = -math.inf
        self._plan_version = 0
        self._limits_version = 0
        self._evaluated: tuple[int, float, int] | None = None
        self._held_back = False
        self._renew_scan_at = -math.inf  # no renewal can be due before this (monotonic)
        self._unit_memo = UnitMemo()  # the last re-plan's units, reused where unchanged
        # the periodic re-plan in flight, run in slices (`_replan_sliced`); any other
        # re-plan or the end of the services cancels it
        self.replanning: asyncio.Task[None] | None = None
        self._cancelled_replans: set[asyncio.Task[None]] = set()  # (referenced until done)
        self._batches: set[asyncio.Future[None]] = set()  # limit batches not yet settled
        # per plan, each first-pass move's order at its target, built at re-plan time
        # (off the latency path); releases' orders never change
        self._pass_orders: dict[int, _PassOrders] = {}
        self._release_orders: dict[Key, LimitOrder] = {}
        self._variant_changes: list[Key] = []  # since the pass orders were built
        self._base_drops = 0  # units whose baseline was dropped so far
        self._runners: list[asyncio.Task[None]] = []
        self.listeners: list[Callable[[], None]] = []  # told after every evaluation
        self.on_record: Callable[[str, RecordRow], None] | None = None  # storage hooks
        self.on_audit: Callable[[AuditEntry], None] | None = None
        self.on_service: Callable[[ActiveService], None] | None = None
        self.on_unit_rows: Callable[[list[UnitRow]], None] | None = None

    # -- lifecycle ----------------------------------------------------------------
    def start(self, *sources: FrequencySource) -> None:
        loop = asyncio.get_running_loop()
        self._runners = [loop.create_task(self._consume(s)) for s in sources]
        self._runners.append(loop.create_task(self._tick()))

    async def stop(self) -> None:
        """Stop the loops and release every limit (best effort; expiry covers the rest)."""
        self._cancel_replanning()
        for task in [*self._runners, *self._cancelled_replans]:
            task.cancel()
        for task in self._runners:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._dispatch([(sid, eid, None) for sid, eid in self.limits], "shutdown", ())
        await self.drain()

    async def drain(self) -> None:
        """Wait for the commands in flight and their fallbacks (tests, shutdown)."""
        while self._batches:
            await asyncio.gather(*list(self._batches), return_exceptions=True)

    async def _consume(self, source: FrequencySource) -> None:
        try:
            async for sample in source:
                self.on_sample(sample)
        except Exception:
            log.exception("frequency source %r failed; the feed will go stale", source)

    async def _tick(self) -> None:
        """A fixed-rate tick (its own work does not delay the next one): 1 s records."""
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.config.tick_s
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += self.config.tick_s
            if next_at < loop.time():  # fell behind (a stalled loop): skip, don't burst
                next_at = loop.time() + self.config.tick_s
            try:
                self.tick()
            except Exception:
                log.exception("grid engine tick failed")

    def on_event(self, event: object) -> None:
        """Fleet events (from the hub): a change in who can be controlled → re-plan."""
        if type(event) in _PLAN_EVENTS:
            self._plan_stale = True

    # -- services -----------------------------------------------------------------
    def activate(
        self,
        kind: ServiceKind,
        params: ServiceParams,
        *,
        service_id: str | None = None,
        started_at: datetime | None = None,
    ) -> ActiveService:
        """Start a service (or resume a stored one: `service_id`, `started_at`)."""
        now = self.wall()
        if self.baseline is None:
            self.baseline = capture_baseline(self.fleet, now)
            self._replan()
        service_id = service_id or f"svc-{uuid.uuid4().hex[:12]}"  # unique across restarts
        service = ActiveService(service_id, kind, params, started_at or now, self.baseline_w())
        self.services[service.id] = service
        if self.on_service is not None:
            self.on_service(service)
        self.evaluate("activate " + service.id)
        return service

    def deactivate(self, service_id: str) -> ActiveService | None:
        service = self.services.get(service_id)
        if service is None or not service.active:
            return service
        service.stopped_at = self.wall()
        service.delta_w = 0.0
        if self.on_service is not None:
            self.on_service(service)
        self.evaluate("deactivate " + service_id, also=service_id)
        if not self.active_services():
            self._cancel_replanning()  # (its plan would outlive the services)
            self.baseline, self.plan = None, None
            self._pass_orders.clear()
        return service

    # -- restart ------------------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        """What a restarted engine needs to take over: per unit its meter-before
        baseline, the limit in force (with its wall-clock expiry at the station) and
        the form of limit it takes. JSON-ready."""
        mono, wall = self.mono(), self.wall().timestamp()
        units = []
        for key, base in self.unit_base.items():
            limit = self.limits.get(key)
            expires = self.expires.get(key)
            valid_to = None if expires is None else round(wall + expires - mono, 3)
            units.append([key[0], key[1], base, limit, valid_to, self.variant.get(key, 0)])
        return {"saved_at": wall, "units": units}

    def snapshot_if_dirty(self) -> dict[str, object] | None:
        if not self._dirty:
            return None
        self._dirty = False
        return self.snapshot()

    def resume(
        self,
        services: list[tuple[str, ServiceKind, ServiceParams, datetime]],
        snapshot: dict[str, Any] | None,
    ) -> list[ActiveService]:
        """Take over after a restart: the limits still in force at the stations (so
        nothing is curtailed twice) and the services that were active, same ids."""
        mono, wall = self.mono(), self.wall().timestamp()
        for sid, eid, base, limit, valid_to, variant in (snapshot or {}).get("units", []):
            key = (str(sid), int(eid))
            self.unit_base[key] = float(base)
            self._unit_evse[key] = self._evse(key)
            if variant:
                self.variant[key] = int(variant)
                self._variant_changes.append(key)
            if limit is not None and valid_to is not None and valid_to > wall + 1.0:
                self.limits[key] = float(limit)
                self._limits_version += 1
                self._renew_scan_at = -math.inf
                self.expires[key] = mono + (valid_to - wall)
            else:  # lapsed at the station meanwhile: back to its own power soon
                self.released_at[key] = mono
        resumed = []
        for service_id, kind, params, started_at in services:
            resumed.append(
                self.activate(kind, params, service_id=service_id, started_at=started_at)
            )
        if not resumed:  # nothing to resume: release what is left
            self.evaluate("resume: no active service")
        return resumed

    def set_spec(self, key: Key, spec: EvseSpec) -> None:
        """An EVSE's capabilities (operator inventory); used from the next re-plan on."""
        self.specs[key] = spec
        self._plan_stale = True
        self._pass_orders.clear()  # an amps limit depends on the spec

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
        marked = self._check_responses()
        self._forget_released()
        if self.backoff:  # lapsed back-offs: keeps the dispatch's fast path open
            mono = self.mono()
            self.backoff = {k: t for k, t in self.backoff.items() if t > mono}
        due = self.mono() - self._planned_at >= self.config.replan_interval_s
        if self.baseline is not None and (self._plan_stale or marked):
            self._replan()  # who can be moved changed: now, in this turn
        elif self.baseline is not None and due and self.replanning is None:
            self._start_sliced_replan()
        self.evaluate(f"compensate {marked} non-responding" if marked else "tick")
        self._renew()
        self._record(now)

    # -- evaluation ---------------------------------------------------------------
    def evaluate(self, reason: str, *, also: str | None = None) -> int:
        """Bring the limits in line with the services' ΔP; returns how many commands
        were sent."""
        started = time.perf_counter()
        with _no_gc_pause():
            sent = self._evaluate(reason, also)
            # taken before the deferred collection runs: it follows the frames
            elapsed = time.perf_counter() - started
        self.evaluations += 1
        self.evaluation_s += elapsed
        if sent:
            self.last_dispatch_s, self.last_dispatch_commands = elapsed, sent
        for listener in self.listeners:
            listener()
        return sent

    def _evaluate(self, reason: str, also: str | None) -> int:
        self.delta_w = sum(self._service_delta(s) for s in self.active_services())
        key = (self._plan_version, round(self.delta_w), self._limits_version)
        cmds: Commands | list[LimitCommand]
        if self.plan is None:
            cmds = [(sid, eid, None) for sid, eid in self.limits]
        elif key == self._evaluated:
            cmds = []  # same plan, same ΔP, same limits: the same (empty) answer
        else:
            plan, threshold = self.plan, self.config.threshold_w
            cmds = minimal(plan, moves(plan, self.delta_w), self.limits, threshold)
        if not self.health.ok and reason in ("tick", "frequency") and self._frequency_services():
            reason = f"feed {self.health.status}: {self.health.reason}"
        tags = tuple(s.id for s in self.active_services()) + ((also,) if also else ())
        self._held_back = False
        sent = self._dispatch(cmds, reason, tags)
        # the state these commands lead to: evaluating it again yields nothing
        self._evaluated = None if self._held_back else (key[0], key[1], self._limits_version)
        return sent

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
            base = self.baseline_w() if self.baseline is not None else 0.0
            delta = setpoint_delta_w(p, base, self.wall().timestamp())
        service.delta_w = delta or 0.0
        return service.delta_w

    def _replan(self) -> None:
        """Re-plan now, in this turn; supersedes a sliced re-plan in flight."""
        self._cancel_replanning()
        units = self._units(self.wall())
        self._plan_stale = False
        self._planned_at = self.mono()
        old = self.plan
        if not self._keep_plan(units):
            self._install(prepare(units, previous=old))  # (its order, when no key changed)

    def _start_sliced_replan(self) -> None:
        """The periodic re-plan, in slices of a few ms each (see `_replan_sliced`)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven without an event loop (a script): at once
            loop = None
        if loop is None or self.config.replan_slice_evses <= 0:
            self._replan()
            return
        self._planned_at = self.mono()  # (the interval runs from the start)
        self.replanning = loop.create_task(self._replan_sliced())

    async def _replan_sliced(self) -> None:
        """`_replan` spread over event-loop turns, so a periodic re-plan at 10,000 EVSEs
        (60–90 ms in one go when every meter moved) does not stall every station's
        answers: the units are collected ~`replan_slice_evses` EVSEs per turn (~7 ms at
        2,000, all meters moved), the plan prepared in three turns (`prepare_steps`:
        order ~4 ms, down pass ~10 ms, up pass ~1 ms at 10,000 units, measured; at
        once it was ~15 ms) and installed (with its pass orders) in the turn after.
        The old plan serves samples meanwhile: a new one is in force from the first
        evaluation after its install (the next sample or tick).

        The plan comes from a snapshot taken over a few turns, not at one instant:
        accepted (lead's decision) since the fleet moves continuously anyway and the
        next re-plan follows within `replan_interval_s`. What must be exact is who can
        be moved: a fleet or closed-loop change makes the next tick re-plan at once
        (`_replan`), which cancels this one, as does the end of the last service; so
        a sliced plan is never installed over a newer one.
        """
        try:
            old = self.plan
            collection = self._collection(self.wall())
            # a list: the fleet's dict may gain or lose stations between two turns
            stations = list(self.fleet.stations.values())
            for chunk in _chunks(stations, self.config.replan_slice_evses):
                await asyncio.sleep(0)
                collection.add(chunk)
            units = self._responding(collection.finish())
            if self._keep_plan(units):
                return
            steps = prepare_steps(units, previous=old)
            while True:
                await asyncio.sleep(0)
                try:
                    next(steps)
                except StopIteration as done:
                    plan: Plan = done.value
                    break
            await asyncio.sleep(0)
            if self.plan is old:  # (always, unless cancelled: belt and braces)
                self._install(plan)
        except Exception:
            log.exception("periodic re-plan failed; the plan in force stays")
        finally:
            if self.replanning is asyncio.current_task():
                self.replanning = None

    def _cancel_replanning(self) -> None:
        task, self.replanning = self.replanning, None
        if task is not None:
            # cancelled at its next await: it installs nothing; kept referenced until
            # it has run to its end
            task.cancel()
            self._cancelled_replans.add(task)
            task.add_done_callback(self._cancelled_replans.discard)

    def _keep_plan(self, units: list[Unit]) -> bool:
        """Whether `units` are the plan's own unit objects (`UnitMemo`: none of their
        inputs changed). Then the plan, a pure function of them, is the same too: it
        is kept with the orders built for it (no new version: evaluating it again
        would send nothing)."""
        old = self.plan
        if old is None or not _same_units(units, old.units):
            return False
        for first in (old.lower, old.raise_):
            if first is not None:
                self._orders_of(first)
        return True

    def _install(self, plan: Plan) -> None:
        old = self.plan
        self.plan = plan
        self._plan_version += 1
        # the orders of the plan's full moves, now rather than on the next step (from
        # the old plan's, when the moves are the same)
        before = [None, None] if old is None else [self._built(old.lower), self._built(old.raise_)]
        self._pass_orders.clear()
        self._variant_changes.clear()
        for first, previous in zip((self.plan.lower, self.plan.raise_), before, strict=True):
            if first is not None:
                self._pass_orders[id(first)] = _PassOrders.build(first, self, previous)

    def _units(self, now: datetime) -> list[Unit]:
        """Units evflex may move: not the non-responding ones, which others make up for.

        A unit evflex limits keeps the power it had when first limited as its baseline;
        the others' baseline is what they draw now (they are not being controlled).
        """
        collection = self._collection(now)
        collection.add(self.fleet.stations.values())
        return self._responding(collection.finish())

    def _collection(self, now: datetime) -> UnitCollection:
        return UnitCollection(
            self.unit_base,
            self.specs,
            self.sessions,
            now.timestamp(),
            model_specs=self.model_specs,
            memo=self._unit_memo,
        )

    def _responding(self, units: list[Unit]) -> list[Unit]:
        if not self.non_responding:
            return units
        return [u for u in units if (u.station_id, u.evse_id) not in self.non_responding]

    def _sessions(self, units: list[Unit]) -> dict[Key, SessionInfo]:
        """Each unit's session as the allocator sees it (departures feed the P90)."""
        out: dict[Key, SessionInfo] = {}
        for u in units:
            key = (u.station_id, u.evse_id)
            given = self.sessions.get(key)
            if given is not None:
                out[key] = given
                continue
            evse = self._evse(key)
            if evse is not None and evse.needs is not None:
                out[key] = session_from_needs(evse.needs, evse.energy_wh)
        return out

    def baseline_w(self) -> float:
        """The portfolio's counterfactual power now (W): what it would draw without evflex.

        Per-unit meter-before: measured − Σ (measured − baseline) over the units evflex
        limits, so an uncontrolled car arriving or leaving moves the baseline and the
        measurement alike, and measured − baseline is exactly what evflex's limits do.
        """
        measured = self.fleet.summary().power_w
        now_w = sum([(e.power_w or 0.0) for e in self._unit_evse.values() if e is not None])
        return measured - (now_w - sum(self.unit_base.values()))

    def _power(self, key: Key) -> float:
        evse = self._evse(key)
        return (evse.power_w or 0.0) if evse is not None else 0.0

    def _evse(self, key: Key) -> Evse | None:
        station = self.fleet.stations.get(key[0])
        return station.evses.get(key[1]) if station is not None else None

    def _model(self, station_id: str) -> str:
        station = self.fleet.stations.get(station_id)
        if station is None:
            return model_key(None, None, None)
        return model_key(station.vendor, station.model, station.firmware)

    # -- closed loop --------------------------------------------------------------
    def _check_responses(self) -> int:
        """Judge due expectations; mark units that did not move. Returns how many."""
        now, wall = self.mono(), self.wall()
        for key, until in list(self.non_responding.items()):
            if until <= now:
                del self.non_responding[key]  # worth another try
                self._plan_stale = True
        marked = 0
        rp = self.config.response
        unit_evse = self._unit_evse
        # one pass over the pending reductions (10,000 at full activation): a cheap
        # "still pending" test before the full judgement
        for key, exp in list(self.expect.items()):
            evse = unit_evse.get(key)
            power = evse.power_w if evse is not None else None
            if power is None:
                if now < exp.due_at:
                    continue
                verdict = "late"
            elif now < exp.due_at and power > exp.limit_w + exp.tolerance_w:
                continue
            else:
                verdict = judge(exp, power, now, rp)
            del self.expect[key]
            stats = self.models.setdefault(exp.model, ModelResponse())
            if verdict == "moved":
                stats.moved += 1
                stats.delays_s.append(_delay_s(exp, evse, now, wall))
                continue
            stats.non_responding += 1
            marked += 1
            self._mark(
                key,
                f"accepted {exp.limit_w:.0f} W but still at {power} W after "
                f"{exp.due_at - exp.accepted_at:.1f} s",
                exp.limit_w,
            )
        return marked

    def _mark(self, key: Key, why: str, limit_w: float | None) -> None:
        """Stop counting on a unit for `hold_s`: the others make up for it."""
        self.non_responding[key] = self.mono() + self.config.response.hold_s
        self._dirty = True
        self._plan_stale = True
        self.unit_reasons.setdefault(key[0], {})[key[1]] = why
        self.expect.pop(key, None)
        log.warning("grid: %s/%s non-responding: %s", key[0], key[1], why)
        self._audit(key, "non_responding", why, limit_w, "marked", None)

    def _forget_released(self) -> None:
        """Drop a released unit's baseline once it is back (or has had its chance)."""
        released_at = self.released_at
        if released_at and self.limits:
            # units limited again since their release (a step leaves them here, see
            # `_record_sets`): found by set operations on the dicts' own hashes
            again = set(released_at)
            again &= set(self.limits)
            if len(again) == len(released_at):
                released_at.clear()
            else:
                for key in again:
                    del released_at[key]
        if not released_at:
            return
        now = self.mono()
        rp = self.config.response
        for key, at in list(released_at.items()):
            if key in self.limits:
                del self.released_at[key]
                continue
            base = self.unit_base.get(key)
            back = base is None or self._power(key) >= base - tolerance_w(base, rp)
            if back or now - at > rp.max_delay_s:
                self.unit_base.pop(key, None)
                self._unit_evse.pop(key, None)
                self._base_drops += 1
                del self.released_at[key]
                self._dirty = True

    # -- dispatch -----------------------------------------------------------------
    def _dispatch(
        self, cmds: Commands | list[LimitCommand], reason: str, tags: tuple[str, ...]
    ) -> int:
        """One pass: every command to the port in one batch, so no station waits for
        another's answer and none for a task of its own to be scheduled. Returns how
        many commands were sent."""
        if isinstance(cmds, Commands):
            if not self.backoff:
                return self._dispatch_bulk(cmds, reason, tags)
            given = command_list(cmds)  # (rare) some units back off: one by one, below
        else:
            given = cmds
        now = self.mono()
        backoff = self.backoff
        todo = given
        if backoff:  # (usually empty: no per-command lookup then)
            todo = [c for c in given if c[2] is None or backoff.get(c[:2], now) <= now]
            if len(todo) != len(given):
                self._held_back = True  # some backing off: evaluate again, not from the cache
        if not todo:
            return 0
        self._limits_version += 1
        self._dirty = True
        expiry = now + self.config.valid_for_s
        # one command at a time (shutdown, releases without a plan, units backing
        # off; an evaluation's `Commands` go through `_dispatch_bulk`): the engine's
        # own dicts are updated in place, through local names
        limits, expires, expect = self.limits, self.expires, self.expect
        unit_base, unit_evse, released_at = self.unit_base, self._unit_evse, self.released_at
        sends: list[_Send] = []
        set_any = False
        for sid, eid, limit in todo:
            key = (sid, eid)
            if limit is None:
                limits.pop(key, None)
                expires.pop(key, None)
                expect.pop(key, None)
                if key in unit_base:
                    released_at[key] = now
                sends.append((key, None, "release", reason))
                continue
            limits[key] = limit
            expires[key] = expiry
            released_at.pop(key, None)
            set_any = True
            if key not in unit_base:
                evse = self._evse(key)
                unit_base[key] = (evse.power_w or 0.0) if evse is not None else 0.0
                unit_evse[key] = evse
            sends.append((key, limit, "set", reason))
        if set_any and expiry - self.config.renew_before_s < self._renew_scan_at:
            self._renew_scan_at = expiry - self.config.renew_before_s
        self._submit(sends, tags)
        return len(todo)

    def _dispatch_bulk(self, c: Commands, reason: str, tags: tuple[str, ...]) -> int:
        """`_dispatch` column by column, for a step that moves 10,000 units.

        What the frames need comes first: the orders (for the full moves, the ones
        built at re-plan time), handed to the port in one batch; then the engine's own
        records (limits, expiries, baselines, what the answers are judged by), in bulk
        dict operations rather than one command at a time.
        """
        first, fresh, other, releases = c
        built = self._orders_of(first) if first is not None and fresh else None
        if built is not None:
            built.refresh(fresh, self)
        keys: Sequence[Key]
        limits_w: Sequence[float | None]
        orders: Sequence[LimitOrder]
        variants: Sequence[int]
        evses: Sequence[Evse | None]
        if built is not None and not other and not releases and fresh == range(len(built.orders)):
            # every move of the pass (a fleet-wide step): the plan's own lists, no copy
            keys, limits_w = built.first.keys, built.first.target_w
            orders, variants, evses = built.orders, built.variants, built.evses
            built.shared = True
        else:
            keys, limits_w, orders, variants, evses = self._columns(c, built)
        if not orders:
            return 0
        sent = _Sent(keys, limits_w, "set", reason, variants)
        self._hand_over(orders, sent, tags)
        # -- every order is with the port (an idle station's frame written): records
        now = self.mono()
        powers = [(e.power_w or 0.0) if e is not None else 0.0 for e in evses]
        sent.powers_w = powers + [0.0] * len(releases) if releases else powers
        self._limits_version += 1
        self._dirty = True
        sets = len(evses)
        if sets:
            batch = built.limits if built is not None and keys is built.first.keys else None
            # units known to have a baseline already: no lookup (see `_PassOrders`)
            known = (
                built is not None
                and isinstance(fresh, range)
                and not other
                and built.base_drops == self._base_drops
                and fresh.stop <= built.in_base
            )
            if sets < len(keys):  # (the releases follow the sets)
                keys, limits_w = keys[:sets], limits_w[:sets]
            self._record_sets(keys, limits_w, evses, powers, batch, now, known)
            if built is not None and isinstance(fresh, range):
                built.has_baselines(fresh, self._base_drops)
        if releases:
            self._record_releases(releases, now)
        return len(orders)

    def _columns(
        self, c: Commands, built: _PassOrders | None
    ) -> tuple[list[Key], list[float | None], list[LimitOrder], list[int], list[Evse | None]]:
        """The batch of `c` as columns: the full moves' (from `built`), the other
        limits', then the releases' (keys, limits, orders, variants); EVSEs of the sets."""
        first, fresh, other, releases = c
        keys: list[Key] = []
        limits_w: list[float | None] = []
        orders: list[LimitOrder] = []
        variants: list[int] = []
        evses: list[Evse | None] = []
        if built is not None and first is not None:
            if isinstance(fresh, range):
                a, b = fresh.start, fresh.stop
                keys += first.keys[a:b]
                limits_w += first.target_w[a:b]
                orders += built.orders[a:b]
                variants += built.variants[a:b]
                evses += built.evses[a:b]
            else:
                keys += map(first.keys.__getitem__, fresh)
                limits_w += map(first.target_w.__getitem__, fresh)
                orders += map(built.orders.__getitem__, fresh)
                variants += map(built.variants.__getitem__, fresh)
                evses += map(built.evses.__getitem__, fresh)
        for sid, eid, limit in other:
            key = (sid, eid)
            evse = self._evse(key)
            variant = self.variant.get(key, 0)
            orders.append(self._order(key, evse, limit, VARIANTS[variant]))
            keys.append(key)
            limits_w.append(limit)
            variants.append(variant)
            evses.append(evse)
        if releases:
            cached = list(map(self._release_orders.get, releases))
            if None in cached:
                cached = [
                    o or self._release_order(k) for o, k in zip(cached, releases, strict=True)
                ]
            orders += cached  # type: ignore[arg-type]  # (no None left)
            keys += releases
            limits_w += [None] * len(releases)
            variants += [0] * len(releases)  # (a release's answer is only audited)
        return keys, limits_w, orders, variants, evses

    def _record_sets(
        self,
        keys: Sequence[Key],
        limits_w: Sequence[float | None],
        evses: Sequence[Evse | None],
        powers_w: Sequence[float],
        batch: dict[Key, float | None] | None,
        now: float,
        known: bool,
    ) -> None:
        """The limits just handed over are in force until proven otherwise; a unit's
        first limit makes its power when it was sent (`powers_w`) its baseline.
        `batch`: the keys and limits as a dict, when there is one already (hashed
        once); `known`: every unit has its baseline already."""
        if batch is None:
            batch = dict(zip(keys, limits_w, strict=True))
        self.limits.update(batch)  # type: ignore[arg-type]  # (sets only: no None)
        expiry = now + self.config.valid_for_s
        self.expires.update(dict.fromkeys(batch, expiry))  # same keys: hashes reused
        # (a unit limited again stays in released_at until the tick: _forget_released
        # drops every entry that has a limit again, so no per-key removal here)
        unit_base = self.unit_base
        new = [] if known else list(filterfalse(unit_base.__contains__, batch))
        if len(new) == len(batch):  # a first step: every unit's power now is its baseline
            unit_base.update(zip(keys, powers_w, strict=True))
            self._unit_evse.update(zip(keys, evses, strict=True))
        elif new:
            at = {key: j for j, key in enumerate(keys)} if len(new) > 16 else None
            for key in new:
                j = at[key] if at is not None else keys.index(key)
                unit_base[key], self._unit_evse[key] = powers_w[j], evses[j]
        if expiry - self.config.renew_before_s < self._renew_scan_at:
            self._renew_scan_at = expiry - self.config.renew_before_s

    def _record_releases(self, releases: list[Key], now: float) -> None:
        """Limits just released (all of them in `limits`, as `minimal` gives them):
        forgotten, and the units watched until they are back."""
        limits, expires, expect, m = self.limits, self.expires, self.expect, len(releases)
        # (expiries are kept for exactly the limits' keys: set and dropped together)
        if m == len(limits):  # every limit goes: cleared, not popped one by one
            gone = dict.fromkeys(limits, now)  # (the dict's own hashes: no lookups)
            limits.clear()
            expires.clear()
        else:
            gone = dict.fromkeys(releases, now)
            if _ends_with(limits, releases) and _ends_with(expires, releases):
                # the usual partial release: the units limited last go first
                deque(starmap(limits.popitem, repeat((), m)), maxlen=0)
                deque(starmap(expires.popitem, repeat((), m)), maxlen=0)
            else:
                for key in releases:
                    del limits[key]
                    expires.pop(key, None)
        if expect:
            deque(map(expect.pop, gone, repeat(None)), maxlen=0)
        # a limited unit always has its baseline (set with its first limit, dropped
        # only once released and back): every released unit is watched
        self.released_at.update(gone)

    def _orders_of(self, first: Pass) -> _PassOrders:
        """The orders of `first`'s moves, built once per plan (see `_PassOrders`)."""
        built = self._pass_orders.get(id(first))
        if built is None or built.first is not first:
            built = self._pass_orders[id(first)] = _PassOrders.build(first, self)
        return built

    def _built(self, first: Pass | None) -> _PassOrders | None:
        """The orders built for `first`, if they were."""
        built = self._pass_orders.get(id(first)) if first is not None else None
        return built if built is not None and built.first is first else None

    def _release_order(self, key: Key) -> LimitOrder:
        order = self._release_orders.get(key)
        if order is None:
            order = self._release_orders[key] = self._order(key, None, None, VARIANTS[0])
        return order

    def _renew(self) -> None:
        """Resend limits whose expiry is near, so an active service never lapses."""
        now = self.mono()
        if now < self._renew_scan_at:  # nothing can be due before the earliest expiry
            return
        due = [k for k, t in self.expires.items() if t - now < self.config.renew_before_s]
        sends: list[_Send] = []
        for key in due:
            limit = self.limits.get(key)
            if limit is None:
                continue
            self.expires[key] = now + self.config.valid_for_s
            sends.append((key, limit, "renew", "expiry renewal"))
        self._submit(sends, tuple(s.id for s in self.active_services()))
        # later limits expire later (now + valid_for_s), so the earliest bounds the next scan
        earliest = min(self.expires.values(), default=math.inf)
        self._renew_scan_at = earliest - self.config.renew_before_s

    def _submit(self, sends: list[_Send], tags: tuple[str, ...]) -> None:
        """Hand `sends` to the port as one batch; their outcomes come to `_on_outcomes`."""
        if not sends:
            return
        orders: list[LimitOrder] = []
        pending: list[_Pending] = []
        variants, stations, order = self.variant, self.fleet.stations, self._order
        for key, limit_w, action, reason in sends:
            station = stations.get(key[0])
            evse = station.evses.get(key[1]) if station is not None else None
            variant = variants.get(key, 0)
            orders.append(order(key, evse, limit_w, VARIANTS[variant]))
            power = (evse.power_w or 0.0) if evse is not None else 0.0
            pending.append((key, limit_w, action, reason, variant, power))
        self._hand_over(orders, pending, tags)

    def _hand_over(
        self, orders: Sequence[LimitOrder], pending: _Sent | list[_Pending], tags: tuple[str, ...]
    ) -> None:
        """One `send_limits` call; its answers go to `_on_outcomes` (never from inside
        the call, so what follows it still comes before any answer)."""
        cfg = self.config
        wall = self.wall()
        batch = LimitBatch(cfg.stack_level, wall, wall + timedelta(seconds=cfg.valid_for_s))
        done = self.port.send_limits(
            orders,
            batch,
            partial(self._on_outcomes, pending, tags),
            timeout_s=cfg.command_timeout_s,
        )
        self._batches.add(done)
        done.add_done_callback(self._batches.discard)

    def _on_outcomes(
        self,
        pending: _Sent | list[_Pending],
        tags: tuple[str, ...],
        outcomes: list[LimitOutcome],
    ) -> None:
        """Answers of a batch, as they come: audit, closed loop, fallbacks (one batch)."""
        fallbacks: list[_Send] = []
        # these answers came in the same loop pass: one clock reading, and each
        # model's expected delay (a p90 over up to 500 observations) computed once
        now = self.mono()
        delays: dict[str, float] = {}
        for index, status, error in outcomes:
            if error is None:
                outcome, detail = status or "answered", None
            else:
                outcome, detail = error.reason, str(error)
            fallback = self._settle(pending[index], outcome, detail, tags, now, delays)
            if fallback is not None:
                fallbacks.append(fallback)
        self._submit(fallbacks, tags)

    def _settle(
        self,
        sent: _Pending,
        outcome: str,
        detail: str | None,
        tags: tuple[str, ...],
        now: float,
        delays: dict[str, float],
    ) -> _Send | None:
        """One station's answer to one limit; returns the fallback to send, if any."""
        key, limit_w, action, reason, variant, from_w = sent
        station_id, evse_id = key
        self._audit(key, action, reason, limit_w, outcome, detail, tags)
        if limit_w is None:
            return None
        model = self._model(station_id)
        stats = self.models.get(model)
        if stats is None:
            stats = self.models[model] = ModelResponse()
        stats.sent += 1
        current = self.limits.get(key) == limit_w  # not superseded meanwhile
        if outcome == "Accepted":
            stats.accepted += 1
            if variant:
                name = "/".join(VARIANTS[variant])
                stats.fallbacks[name] = stats.fallbacks.get(name, 0) + 1
                self.unit_reasons.setdefault(station_id, {})[evse_id] = f"{_FALLBACK} {name}"
            if current and action != "renew":
                self._expect(key, limit_w, from_w, model, now, delays)
            return None
        if outcome in _REFUSALS:
            stats.rejected += 1
        else:
            stats.failed += 1
        if not current:
            return None
        nxt = self._next_variant(key, variant)
        if outcome in _REFUSALS and nxt is not None:
            self.variant[key] = nxt
            self._variant_changes.append(key)
            name = "/".join(VARIANTS[nxt])
            return (key, limit_w, "fallback", f"{outcome}: try {name}")
        # not in force: forget it, count on the others, try again later
        self._dirty = True
        self._limits_version += 1
        self.limits.pop(key, None)
        self.expires.pop(key, None)
        self.backoff[key] = now + self.config.retry_after_s
        if outcome in _REFUSALS:
            self.variant.pop(key, None)
            self._variant_changes.append(key)
            self._mark(key, f"refused every form of limit ({outcome})", limit_w)
        elif outcome == "timeout":
            self._mark(key, "did not answer SetChargingProfile", limit_w)
        return None

    def _next_variant(self, key: Key, variant: int) -> int | None:
        """The next way to express a limit; "other" purposes only with a transaction
        (without one, tx_default is the only per-EVSE purpose)."""
        evse = self._evse(key)
        has_tx = evse is not None and evse.transaction is not None
        for i in range(variant + 1, len(VARIANTS)):
            if VARIANTS[i][1] == "natural" or has_tx:
                return i
        return None

    def _expect(
        self,
        key: Key,
        limit_w: float,
        from_w: float,
        model: str,
        now: float,
        delays: dict[str, float],
    ) -> None:
        """Watch an accepted reduction; `delays` caches expected delays by model."""
        rp = self.config.response
        old = self.expect.get(key)
        if old is not None:  # a changed limit: keep the clock of the first one
            from_w = old.from_w
        if not needs_check(limit_w, from_w, rp):
            self.expect.pop(key, None)
            return
        if old is not None:
            accepted, due = old.accepted_at, old.due_at
        else:
            delay = delays.get(model)
            if delay is None:
                stats = self.models.setdefault(model, ModelResponse())
                delay = delays[model] = expected_delay_s(stats.delays_s, rp)
            accepted, due = now, now + delay
        self.expect[key] = Expectation(
            limit_w, from_w, accepted, due, model, tolerance_w(from_w, rp)
        )

    def _audit(
        self,
        key: Key,
        action: Action,
        reason: str,
        limit_w: float | None,
        outcome: str,
        detail: str | None,
        tags: tuple[str, ...] | None = None,
    ) -> None:
        if tags is None:
            tags = tuple(s.id for s in self.active_services())
        sid, eid = key
        entry = AuditEntry(self.wall(), tags, sid, eid, action, reason, limit_w, outcome, detail)
        self.audit.append(entry)
        if self.on_audit is not None:
            self.on_audit(entry)

    def _order(
        self, key: Key, evse: Evse | None, limit_w: float | None, variant: Variant
    ) -> LimitOrder:
        """A limit on the running transaction (else the EVSE's default); the port gives
        it the batch's start and expiry. None: clear evflex's profile."""
        sid, eid = key
        profile_id = self.config.profile_id_base + eid
        if limit_w is None:
            return make_limit_order((sid, eid, profile_id, None, "W", "tx_default", None))
        tx = evse.transaction if evse is not None else None
        unit, which = variant
        natural: TxPurpose = "tx" if tx is not None else "tx_default"
        purpose: TxPurpose = natural if which == "natural" else _other(natural)
        value = round(limit_w, 1)
        if unit == "A":
            spec = self.specs.get(key, _DEFAULT_SPEC)
            value = round(w_to_a(limit_w, spec.voltage_v, spec.phases), 1)
        tx_id = tx.transaction_id if tx is not None and purpose == "tx" else None
        return make_limit_order((sid, eid, profile_id, value, unit, purpose, tx_id))

    # -- records and state --------------------------------------------------------
    def _record(self, now: datetime) -> None:
        measured = self.fleet.summary().power_w
        base = self.baseline_w() if self.baseline is not None else measured
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
        if self.on_unit_rows is not None and self.unit_base and self.active_services():
            self.on_unit_rows(self.unit_rows(now))

    def unit_rows(self, now: datetime) -> list[UnitRow]:
        """The per-unit part of the record: every unit evflex controls or just released."""
        rows: list[UnitRow] = []
        limits, evse_of = self.limits, self._evse
        for key, base in self.unit_base.items():
            evse = evse_of(key)
            measured = evse.power_w if evse is not None else None
            rows.append((now, key[0], key[1], base, limits.get(key), measured))
        return rows

    def control_reasons(self, station_id: str) -> list[str]:
        """Machine-readable reasons from the closed loop, for the readiness report."""
        out = []
        for eid, why in self.unit_reasons.get(station_id, {}).items():
            if (station_id, eid) in self.non_responding:
                out.append(f"control:non_responding:EVSE.{eid}")
            elif why.startswith(_FALLBACK):
                out.append(f"control:fallback:{why.rsplit(' ', 1)[-1]}")
        return out

    def state(self, period_s: float = 900.0) -> GridState:
        now = self.wall()
        units = self._units(now)
        sessions = self._sessions(units)
        measured = self.fleet.summary().power_w
        base = self.baseline_w() if self.baseline is not None else None
        return GridState(
            freq_hz=self.health.last.freq_hz if self.health.last is not None else None,
            feed=self.health,
            services=tuple(self.services.values()),
            baseline_w=base,
            delta_w=self.delta_w,
            target_w=None if base is None else base + self.delta_w,
            measured_w=measured,
            limits=len(self.limits),
            non_responding=len(self.non_responding),
            flexibility=flexibility(units),
            p90_down_w=p90_w(units, sessions, now.timestamp(), period_s, direction="down"),
            p90_up_w=p90_w(units, sessions, now.timestamp(), period_s, direction="up"),
        )


TxPurpose = Literal["tx", "tx_default"]
_Send = tuple[Key, float | None, Action, str]
"""A limit to send: (EVSE, limit W or None = release, action, reason)."""


_Pending = tuple[Key, float | None, Action, str, int, float]
"""A limit handed to the port, until its answer: what the answer is judged by —
(EVSE, limit W, action, reason, index into VARIANTS of the form it was sent in, the
unit's power when it was sent). A plain tuple: 10,000 of them per step."""


class _Sent:
    """A batch handed to the port by `_dispatch_bulk`, column by column, until its
    answers: `sent[i]` is the `_Pending` of order i (built only when it is answered).
    `powers_w` is filled right after the hand-over (nothing runs in between)."""

    __slots__ = ("action", "keys", "limits_w", "powers_w", "reason", "variants")

    def __init__(
        self,
        keys: Sequence[Key],
        limits_w: Sequence[float | None],
        action: Action,
        reason: str,
        variants: Sequence[int],
    ) -> None:
        self.keys, self.limits_w, self.action, self.reason = keys, limits_w, action, reason
        self.variants = variants
        self.powers_w: list[float] = []

    def __getitem__(self, i: int) -> _Pending:
        limit = self.limits_w[i]
        action: Action = self.action if limit is not None else "release"
        return (self.keys[i], limit, action, self.reason, self.variants[i], self.powers_w[i])


@dataclass(slots=True)
class _PassOrders:
    """The order of each move of a plan's first pass (`allocation.Pass`) at its target,
    built when the plan is: a fleet-wide step then hands over a slice of this list.

    An order depends on the EVSE's transaction (tx / tx_default) and the form of
    limit the station takes (`Engine.variant`): `refresh` rebuilds the ones whose
    transaction or form changed since (one list comparison when none did).
    """

    first: Pass
    evses: list[Evse | None]
    txs: list[Transaction | None]  # each EVSE's transaction when its order was built
    variants: list[int]
    orders: list[LimitOrder]
    limits: dict[Key, float | None]  # every move's key → target: the whole-pass batch
    variants_seen: int = 0  # Engine._variant_changes taken into account
    at: dict[Key, int] | None = None  # key → position, once a variant changed
    # the first `in_base` moves' units have a baseline (Engine.unit_base) while no
    # baseline was dropped since (Engine._base_drops was `base_drops`)
    in_base: int = 0
    base_drops: int = -1
    shared: bool = False  # `orders` and `variants` were handed over as they are

    @classmethod
    def build(cls, first: Pass, engine: Engine, previous: _PassOrders | None = None) -> _PassOrders:
        """`previous`: the orders of the same direction's pass of the plan before; its
        lists are taken over when every move is the same (key, target, transaction
        and form of limit): a re-plan after meter readings changes amounts, not moves."""
        keys, targets = first.keys, first.target_w
        units = first.units
        evses = [units[i].evse for i in first.unit_ix]
        # units not built from the fleet (`units_from_fleet` sets it); an Evse is always
        # true (`None in evses` would call its dataclass __eq__ on each)
        if not all(evses):
            evses = [
                e if e is not None else engine._evse(k) for e, k in zip(evses, keys, strict=True)
            ]
        txs = [e.transaction if e is not None else None for e in evses]
        variants = [engine.variant.get(key, 0) for key in keys] if engine.variant else None
        if previous is not None and previous._same_moves(keys, targets, txs, variants):
            # its orders are each move's (`refresh` keeps them with its txs and
            # variants); shared: the first change copies them (`_own`)
            return cls(
                first,
                evses,
                txs,
                previous.variants,
                previous.orders,
                previous.limits,
                len(engine._variant_changes),
                None,
                sum(1 for _ in takewhile(engine.unit_base.__contains__, keys)),
                engine._base_drops,
                shared=True,
            )
        # `Engine._order` for the usual form (W, the natural purpose), a column at a
        # time: this runs on every re-plan; other forms go through `_order` itself
        sids, eids = [k[0] for k in keys], [k[1] for k in keys]
        base = engine.config.profile_id_base
        rounded = {t: round(t, 1) for t in set(targets)}  # (a pass has few distinct targets)
        orders = list(
            map(
                make_limit_order,
                zip(
                    sids,
                    eids,
                    [base + eid for eid in eids],
                    map(rounded.__getitem__, targets),
                    repeat("W"),
                    ["tx" if tx is not None else "tx_default" for tx in txs],
                    [tx.transaction_id if tx is not None else None for tx in txs],
                ),
            )
        )
        if variants is None:
            variants = [0] * len(keys)
        else:
            for j in compress(range(len(keys)), variants):
                orders[j] = engine._order(keys[j], evses[j], targets[j], VARIANTS[variants[j]])
        limits: dict[Key, float | None] = dict(zip(first.keys, first.target_w, strict=True))
        in_base = sum(1 for _ in takewhile(engine.unit_base.__contains__, first.keys))
        changes = len(engine._variant_changes)
        return cls(
            first, evses, txs, variants, orders, limits, changes, None, in_base, engine._base_drops
        )

    def _same_moves(
        self,
        keys: list[Key],
        targets: list[float],
        txs: list[Transaction | None],
        variants: list[int] | None,
    ) -> bool:
        """Whether these moves are this pass's, each with the order it has now."""
        first = self.first
        return (
            len(keys) == len(first.keys)
            and (self.variants == variants if variants is not None else not any(self.variants))
            and all(map(is_, txs, self.txs))
            and first.target_w == targets
            and first.keys == keys
        )

    def has_baselines(self, positions: range, drops: int) -> None:
        """The units at `positions` were just given their baselines."""
        if self.base_drops != drops:
            self.in_base, self.base_drops = 0, drops
        if positions.start <= self.in_base:
            self.in_base = max(self.in_base, positions.stop)

    def refresh(self, positions: Sequence[int], engine: Engine) -> None:
        """Bring the orders at `positions` up to date before they are handed over."""
        changes = engine._variant_changes
        if self.variants_seen < len(changes):
            if self.at is None:
                self.at = {key: j for j, key in enumerate(self.first.keys)}
            for key in changes[self.variants_seen :]:
                j = self.at.get(key)
                if j is not None:
                    self._own()
                    self.variants[j] = engine.variant.get(key, 0)
                    self._rebuild(j, engine)
            self.variants_seen = len(changes)
        evses, txs = self.evses, self.txs
        if isinstance(positions, range):
            a, b = positions.start, positions.stop
            whole = a == 0 and b == len(evses)  # (no slices: a copy touches every item)
            now = [
                e.transaction if e is not None else None for e in (evses if whole else evses[a:b])
            ]
            if now == (txs if whole else txs[a:b]):
                return
        else:
            now = [
                e.transaction if e is not None else None for e in map(evses.__getitem__, positions)
            ]
        for j, tx in zip(positions, now, strict=True):
            if tx is not txs[j]:  # a transaction started or ended since the plan
                txs[j] = tx
                self._rebuild(j, engine)

    def _own(self) -> None:
        """Copy on write: a batch handed over may still hold the lists."""
        if self.shared:
            self.orders, self.variants, self.shared = self.orders[:], self.variants[:], False

    def _rebuild(self, j: int, engine: Engine) -> None:
        self._own()
        key, variant = self.first.keys[j], self.variants[j]
        self.orders[j] = engine._order(
            key, self.evses[j], self.first.target_w[j], VARIANTS[variant]
        )


_DEFAULT_SPEC = EvseSpec()
_FALLBACK = "takes limits only as"


_PLAN_EVENTS = frozenset(
    {
        StationConnected,
        StationDisconnected,
        TransactionStarted,
        TransactionStopped,
        StatusChanged,
        ChargingNeedsReported,
    }
)


@contextlib.contextmanager
def _no_gc_pause() -> Iterator[None]:
    """No cyclic garbage collection inside one evaluation (targets → frames written).

    A full collection over a 10,000-station heap took ~40 ms (fcr-engine, measured),
    and a fleet-wide step allocates ~6 objects per command, enough to set one off
    every few steps: right between the sample and the frames. Reference counting
    still frees everything; the deferred collection runs after the pass. Left alone
    when someone else already holds it off (a gateway broadcast).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _chunks(stations: list[Station], evses: int) -> Iterator[list[Station]]:
    """`stations` in runs of about `evses` EVSEs (a station is never split)."""
    chunk: list[Station] = []
    n = 0
    for station in stations:
        chunk.append(station)
        n += len(station.evses)
        if n >= evses:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


def _same_units(units: Sequence[Unit], old: Sequence[Unit]) -> bool:
    """Whether `units` are `old`'s unit objects, in the same order (identity: cheap)."""
    return len(units) == len(old) and all(map(is_, units, old))


def _ends_with(d: dict[Key, Any], keys: list[Key]) -> bool:
    """Whether `keys` are the last keys of `d`, in order (identity compares: cheap)."""
    return len(d) >= len(keys) and list(islice(d, len(d) - len(keys), None)) == keys


def _delay_s(exp: Expectation, evse: Evse | None, now: float, wall: datetime) -> float:
    """Seconds from acceptance to the measurement that showed the move.

    The station's measurement time when it has one (tick-independent), else now.
    """
    delay = now - exp.accepted_at
    at = evse.power_measured_at if evse is not None else None
    if at is not None:
        accepted_wall = wall - timedelta(seconds=delay)
        delay = min(delay, max(0.0, (at - accepted_wall).total_seconds()))
    return delay


def _other(purpose: TxPurpose) -> TxPurpose:
    return "tx_default" if purpose == "tx" else "tx"
