"""Grid-service benchmarks (issue 5): `fcr` (dispatch latency) and `fcr-delivery`.

`evflex bench run fcr -n 10000 --set repeats=3`
    Every loadgen station charges at 7.4 kW and has told the server so. An FCR
    service is started with a bid equal to the fleet's charging power, so at
    49.8 Hz (full activation, ΔP = −bid) *every* charging EVSE must be paused:
    "affected" = every station with a running transaction. The feed is held
    fresh at 50.00 Hz, then one sample steps it to 49.8 Hz. Latency of a station
    = the instant the load generator receives its SetChargingProfile (first
    CALL of that action after the step) − the instant the frequency POST's bytes
    were handed to the socket. Same machine clock (perf_counter); it includes
    the HTTP hop, the engine, the gateway and the loader's own receive path.
    Stepping back to 50.00 Hz releases every limit (ClearChargingProfile):
    measured the same way. A station that never receives its command counts
    as infinite latency (p99 is "—" when more than 1 % are missing).
    Before the load starts, `Engine.evaluate` is timed in-process on a fleet of
    the same size (see `engine_timings`).

`evflex bench run fcr-delivery -n 2000 --set hold_s=300`
    The real simulator (physics, 1–5 s response delays, 5 % faulty chargers:
    accept-but-ignore and reject) charging; FCR with bid P = `bid_share` × the
    measured fleet power; a step to 49.8 Hz held fresh. From the service's own
    1 s record (`GET /api/v1/services/{id}/record.csv`, saved to a file): time
    until the portfolio change (baseline − measured) reaches 95 % of P, and the
    share of 1 s rows within ±5 % of the target over the `hold_s` seconds that
    follow the first `reach_s` (10 s). The same figures on the simulator's
    ground truth (its stations' drawn power, sampled by the loader) separate
    delivery from measurement lag.

Options go through `--set key=value` (see `FcrParams` / `DeliveryParams`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import gc
import io
import math
import secrets
import statistics
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from evflex.bench import frames
from evflex.bench.loadgen import LoadFleet, LoadStation
from evflex.bench.runner import BenchContext, Metrics, register, scenario
from evflex.bench.scenarios import loader_gc_paused
from evflex.bench.server import HOST, system_busy_seconds
from evflex.bench.stats import nan_array, summarize
from evflex.control.allocation import evaluate as allocation_evaluate
from evflex.control.loop import Engine, EngineConfig, Fcr
from evflex.fleet.commands import (
    Command,
    CommandResult,
    LimitBatch,
    LimitOrder,
    LimitOutcome,
)
from evflex.fleet.model import Evse, EvseStatus, Station, Transaction
from evflex.fleet.state import FleetState
from evflex.grid.samples import FrequencySample
from evflex.sim import (
    DelayModel,
    Fault,
    FaultConfig,
    Fleet,
    FleetConfig,
    SessionConfig,
    SessionMode,
    station_ids,
)
from evflex.sim.faults import parse_faults

perf = time.perf_counter
F0_HZ, STEP_HZ = 50.0, 49.8
SET, CLEAR = "SetChargingProfile", "ClearChargingProfile"
_FEED_EVERY_S = 0.5  # the server calls the feed stale after 3 s of silence
_SIM_PASSWORD = "fcr-delivery-bench-password"  # 27 chars: inside the 16–40 of profile 1
_DELIVERY_MIX = "ac16@Home 7:40,ac201@Home 11 Pro:35,ac201@AC Duo:15,ac16@Pole 22:10"


# -- options -----------------------------------------------------------------------
def _parse(cls: type[Any], extra: dict[str, Any]) -> Any:
    """Build a params dataclass from `--set` strings; unknown keys are an error."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(extra) - set(known)
    if unknown:
        raise ValueError(f"unknown --set keys {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, raw in extra.items():
        default = getattr(cls, key)
        if isinstance(raw, str) and not isinstance(default, str):
            if isinstance(default, bool):
                values[key] = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                values[key] = int(raw)
            else:
                values[key] = float(raw)
        else:
            values[key] = raw
    return cls(**values)


@dataclass(frozen=True)
class FcrParams:
    repeats: int = 3  # step down + step back, each measured
    bid_share: float = 1.0  # bid = this × fleet charging power (1.0: every station paused)
    settle_s: float = 3.0  # after each step: answers, audit and command log flushed
    step_timeout_s: float = 15.0  # bound on waiting for every affected station
    engine_units: int = 0  # EVSEs for the in-process engine timing (0: = stations)
    engine_rounds: int = 7
    engine_only: bool = False  # skip the fleet: only the in-process engine timing
    # how long a station takes to answer a CSMS call (0: inline, as it is read); see
    # StampedFleet
    answer_delay_ms: float = 500.0
    # the loader polls without sleeping while a step's frames arrive (_busy_poll): a
    # sleeping loader is woken inside each of the server's loopback sends (an IPI to
    # the other core, ~10 % of the server's pass), work a network would leave to each
    # charger's own CPU. The server's own TCP send and the loopback TCP receive stay
    # charged to it. `false` for the sleeping loader's figure (docs/benchmarks.md).
    loader_spin: bool = True


@dataclass(frozen=True)
class DeliveryParams:
    hold_s: float = 300.0  # measured ±5 % window after `reach_s`
    reach_s: float = 10.0  # the change must reach 95 % of P within this
    bid_share: float = 0.5  # P = this × measured fleet power
    pre_s: float = 5.0  # rows at 50.00 Hz before the step
    faults: str = "ignore:2.5,reject:2.5"  # percent of stations (sim --faults syntax)
    delay_min_s: float = 1.0
    delay_max_s: float = 5.0
    mix: str = _DELIVERY_MIX
    seed: int = 1
    csv: str = ""  # where to save the record ("" = bench-results/<label>-<time>.csv)


# -- frequency feed: raw HTTP so the send instant is exact ---------------------------
class RawPoster:
    """One keep-alive HTTP/1.1 connection to the API; `post` returns the instant its
    bytes were handed to the socket, the answer's instant and the status code.

    No client library between the timestamp and the write: the latency clock
    starts when the request leaves this process.
    """

    def __init__(self, host: str, port: int, token: str, timeout_s: float = 10.0) -> None:
        self.host, self.port, self.token, self.timeout_s = host, port, token, timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None and not self._writer.is_closing():
            return self._reader, self._writer
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout_s
        )
        self._reader, self._writer = reader, writer
        return reader, writer

    async def post(self, path: str, body: bytes) -> tuple[float, float, int]:
        reader, writer = await self._connect()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        data = head + body
        sent = perf()
        writer.write(data)
        try:
            status = await asyncio.wait_for(self._response(reader), self.timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            await self.close()
            raise
        return sent, perf(), status

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> int:
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        return status

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class Feed:
    """Keeps the frequency feed fresh (one sample per `every_s`) at `hz`; `step` changes
    the frequency with one sample and returns when that POST left and was answered."""

    def __init__(self, poster: RawPoster, hz: float, every_s: float = _FEED_EVERY_S) -> None:
        self.poster, self.hz, self.every_s = poster, hz, every_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    async def post(self, hz: float) -> tuple[float, float]:
        async with self._lock:
            body = orjson.dumps([{"hz": hz, "ts": time.time()}])
            sent, answered, status = await self.poster.post("/api/v1/grid/frequency", body)
        if status != 200:
            raise RuntimeError(f"POST /api/v1/grid/frequency: HTTP {status}")
        return sent, answered

    async def start(self, max_s: float) -> None:
        """Three samples (the feed needs three good ones to be usable), then keep-alive."""
        for _ in range(3):
            await self.post(self.hz)
            await asyncio.sleep(0.02)
        self._task = asyncio.create_task(self._run(perf() + max_s))

    async def step(self, hz: float) -> tuple[float, float]:
        self.hz = hz
        return await self.post(hz)

    async def _run(self, until: float) -> None:
        while perf() < until:  # bounded: a forgotten feed stops by itself
            await asyncio.sleep(self.every_s)
            try:
                await self.post(self.hz)
            except (OSError, TimeoutError, RuntimeError, asyncio.IncompleteReadError):
                self.failures += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.poster.close()


# -- load side: receive time of every CSMS→station CALL, by action ------------------
class StampedFleet(LoadFleet):
    """A `LoadFleet` that timestamps (perf_counter) each station's first received CALL
    of the armed action. The stations answer Accepted `answer_delay_s` later.

    A charger's firmware takes tens to hundreds of ms to answer a SetChargingProfile;
    answered inline instead (delay 0), this one core standing in for 10,000 chargers
    spends most of a step sending answers — 7-9 µs each on loopback, most of it the
    server's TCP receive work, which loopback runs in the sender's system call — and
    reads the server's frames more slowly than the server writes them (loader CPU
    0.97 during a step): its last stamps then measure the loader's backlog, not the
    wire. With a delay the answers of a burst go out together after it.
    """

    def __init__(
        self,
        url_prefix: str,
        credentials: Sequence[tuple[str, str | None]],
        *,
        handshake_timeout_s: float = 30.0,
        answer_delay_s: float = 0.0,
    ) -> None:
        super().__init__(url_prefix, credentials, handshake_timeout_s=handshake_timeout_s)
        self.answer_delay_s = answer_delay_s
        self._answers: list[tuple[LoadStation, str]] = []  # (station, message id)
        self.action: str | None = None
        self.stamps: array[float] = nan_array(len(self.stations))
        self.stamped = 0
        self.want = 0
        self.complete = asyncio.Event()

    def arm(self, action: str, want: int) -> None:
        self.action, self.want, self.stamped = action, want, 0
        self.stamps = nan_array(len(self.stations))
        self.complete.clear()

    def on_call(self, station: LoadStation, msg: list[Any], now: float) -> None:
        # `now`: when the frame was read, before it was parsed (the wire, not the JSON)
        if msg[2] == self.action and math.isnan(self.stamps[station.index]):
            self.stamps[station.index] = now
            self.stamped += 1
            if self.stamped >= self.want:
                self.complete.set()
        if self.answer_delay_s <= 0:
            super().on_call(station, msg, now)
            return
        self.calls_received[str(msg[2])] += 1
        if not self._answers:
            self.loop.call_later(self.answer_delay_s, self._answer)
        self._answers.append((station, msg[1]))

    def _answer(self) -> None:
        answers, self._answers = self._answers, []
        for station, message_id in answers:
            station.send(frames.accepted_result(message_id))
        self.last_call_answered = perf()


@dataclass(frozen=True, slots=True)
class _Clocks:
    at: float
    server_s: float
    loader_s: float
    busy_s: float


def _clocks(ctx: BenchContext) -> _Clocks:
    return _Clocks(perf(), ctx.server.cpu_seconds(), time.process_time(), system_busy_seconds())


def _shares(a: _Clocks, b: _Clocks) -> tuple[float, float, float]:
    """(server, loader, everything else) in cores between two readings."""
    wall = b.at - a.at
    if wall <= 0:
        return 0.0, 0.0, 0.0
    server, loader = b.server_s - a.server_s, b.loader_s - a.loader_s
    other = max(0.0, b.busy_s - a.busy_s - server - loader)
    return server / wall, loader / wall, other / wall


def _latency(prefix: str, seconds: Sequence[float]) -> Metrics:
    s = summarize(seconds)
    return {
        f"{prefix}_p50_ms": s.p50_ms,
        f"{prefix}_p90_ms": s.p90_ms,
        f"{prefix}_p99_ms": s.p99_ms,
        f"{prefix}_max_ms": s.max_ms,
    }


async def _report_power(stations: Sequence[LoadStation], timeout_s: float) -> None:
    """One MeterValues (7.4 kW) per station, answered: the server then knows the power."""
    ts = frames.timestamp()

    def builder(prefix: bytes) -> Callable[[str], bytes]:
        return lambda mid: frames.meter_values(mid.encode(), prefix, ts, 1)

    futures = [s.setup_call(builder(s.mv_prefix)) for s in stations]
    if futures:
        await asyncio.wait(futures, timeout=timeout_s)


async def _fleet_power(ctx: BenchContext) -> tuple[float, int]:
    r = await ctx.http.get("/api/v1/fleet")
    r.raise_for_status()
    body = r.json()
    return float(body["power_w"]), int(body["evses_charging"])


async def _until_power(ctx: BenchContext, want_w: float, timeout_s: float) -> float:
    """Poll (another process) until the server measures ≥ `want_w`; returns the last value."""
    deadline = time.monotonic() + timeout_s
    power, _ = await _fleet_power(ctx)
    while power < want_w and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        power, _ = await _fleet_power(ctx)
    return power


async def _start_fcr(ctx: BenchContext, bid_w: float) -> str:
    r = await ctx.http.post("/api/v1/services", json={"type": "fcr", "bid_w": bid_w})
    if r.status_code != 201:
        raise RuntimeError(f"POST /api/v1/services: HTTP {r.status_code} {r.text[:300]}")
    return str(r.json()["id"])


def _poster(ctx: BenchContext) -> RawPoster:
    return RawPoster(HOST, ctx.server.http_port, ctx.server.token, ctx.options.timeout_s)


# -- the engine on its own -----------------------------------------------------------
class _InstantPort:
    """A command port that answers Accepted at once (no sockets); `called_at`: when
    `send_limits` was last called (perf_counter)."""

    called_at = 0.0

    async def send(
        self,
        station_id: str,
        command: Command,
        *,
        priority: bool = False,
        timeout_s: float | None = None,
    ) -> CommandResult:
        return CommandResult("Accepted")

    def send_limits(
        self,
        orders: Sequence[LimitOrder],
        batch: LimitBatch,
        on_outcomes: Callable[[list[LimitOutcome]], None],
        *,
        timeout_s: float | None = None,
    ) -> asyncio.Future[None]:
        """Every order Accepted, in one batch on the next loop pass (like a port whose
        stations all answer at once)."""
        self.called_at = perf()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def answer() -> None:
            on_outcomes([(i, "Accepted", None) for i in range(len(orders))])
            done.set_result(None)

        loop.call_soon(answer)
        return done

    def is_connected(self, station_id: str) -> bool:
        return True


def charging_fleet(n: int, power_w: float = float(frames.POWER_W)) -> FleetState:
    """n connected stations, one EVSE each, charging at `power_w` in a transaction."""
    fleet = FleetState()
    now = datetime.now(UTC)
    for i in range(n):
        sid = f"E{i:06d}"
        station = Station(sid, connected=True)
        station.evses[1] = Evse(
            1,
            status=EvseStatus.CHARGING,
            power_w=power_w,
            power_measured_at=now,
            transaction=Transaction(f"T{i}", 1, now),
        )
        fleet.stations[sid] = station
    return fleet


def _ms(values: Sequence[float]) -> tuple[float, float]:
    return round(statistics.median(values) * 1e3, 3), round(max(values) * 1e3, 3)


async def engine_timings(units: int, rounds: int) -> Metrics:
    """`Engine` in-process on `units` charging EVSEs (7.4 kW), FCR bid = their power.

    - `engine_step_eval`: one `Engine.on_sample` (feed health + evaluate) for a step
      50.0 → 49.8 Hz: targets for every EVSE, the minimal commands (all of them
      change), their hand-over to the port in one batch (`send_limits`) and the
      engine's records of them;
    - `engine_step_handover`: the same step from the sample to the `send_limits`
      call — what runs before the gateway writes the first frame;
    - `engine_replan`: a re-plan (units from fleet state, `allocation.prepare`, the
      orders of the plan's full moves), what the 1 s tick adds when the fleet changed;
    - `engine_steady_eval`: the next sample at the same frequency (no command): the
      per-sample cost of a 10–50 Hz feed;
    - `engine_half_eval`: 49.8 → 49.9 Hz (half the units released);
    - `engine_release_eval`: 49.9 → 50.0 Hz (every limit released);
    - `engine_targets`: `allocation.evaluate` alone (targets + commands, no dispatch);
    - `engine_targets_gc_held`: the same with the cyclic GC held off, as the engine
      runs it inside an evaluation;
    - `engine_tick`: the 1 s tick (re-plan: units from fleet state + sort, evaluate,
      renewals, records);
    - `engine_dispatch_us_per_cmd`: handling the answers of a port that answers at
      once (closed-loop bookkeeping, audit), per command.
    """
    fleet = charging_fleet(units)
    port = _InstantPort()
    engine = Engine(port, fleet, EngineConfig())
    ts = time.time()
    started_at = 0.0

    def sample(hz: float) -> float:
        nonlocal ts, started_at
        ts += 0.01
        started = started_at = perf()
        engine.on_sample(FrequencySample(ts, hz))
        return perf() - started

    step: list[float] = []
    handover: list[float] = []
    replans: list[float] = []
    steady: list[float] = []
    half: list[float] = []
    release: list[float] = []
    targets: list[float] = []
    targets_held: list[float] = []
    ticks: list[float] = []
    dispatch: list[float] = []
    commands = 0
    gc.collect()
    for _ in range(3):
        sample(F0_HZ)
    engine.activate("fcr", Fcr(bid_w=units * float(frames.POWER_W)))
    for _ in range(max(1, rounds)):
        plan = engine.plan
        assert plan is not None
        started = perf()
        cmds = allocation_evaluate(plan, -units * float(frames.POWER_W), engine.limits)
        targets.append(perf() - started)
        collecting = gc.isenabled()
        gc.disable()
        started = perf()
        allocation_evaluate(plan, -units * float(frames.POWER_W), engine.limits)
        targets_held.append(perf() - started)
        if collecting:
            gc.enable()
        step.append(sample(STEP_HZ))
        handover.append(port.called_at - started_at)
        commands = len(cmds)
        started = perf()
        await engine.drain()
        dispatch.append((perf() - started) / max(1, commands))
        steady.append(sample(STEP_HZ))
        started = perf()
        engine.tick()
        ticks.append(perf() - started)
        await engine.drain()
        half.append(sample(49.9))
        await engine.drain()
        release.append(sample(F0_HZ))
        await engine.drain()
    for _ in range(max(1, rounds)):  # last: its garbage would land in the other figures
        started = perf()
        engine._replan()
        replans.append(perf() - started)
    out: Metrics = {"engine_units": units, "engine_step_commands": commands}
    for name, values in (
        ("engine_step_eval", step),
        ("engine_step_handover", handover),
        ("engine_replan", replans),
        ("engine_steady_eval", steady),
        ("engine_half_eval", half),
        ("engine_release_eval", release),
        ("engine_targets", targets),
        ("engine_targets_gc_held", targets_held),
        ("engine_tick", ticks),
    ):
        out[f"{name}_ms_median"], out[f"{name}_ms_max"] = _ms(values)
    out["engine_dispatch_us_per_cmd"] = round(statistics.median(dispatch) * 1e6, 2)
    return out


@scenario("fcr-engine")
async def fcr_engine(ctx: BenchContext) -> Metrics:
    """One `Engine` evaluation on N charging EVSEs, in-process (no fleet, no sockets)."""
    p: FcrParams = _parse(FcrParams, ctx.options.extra)
    return await engine_timings(p.engine_units or ctx.options.stations, p.engine_rounds)


# -- fcr: frequency POST → SetChargingProfile received ---------------------------------
@scenario("fcr")
async def fcr(ctx: BenchContext) -> Metrics:
    """FCR step 50.0 → 49.8 Hz: frequency POST → SetChargingProfile at every station.

    Every charging station is affected (bid = fleet power: all pause); measured on the
    loader's clock, and back to 50.0 Hz (ClearChargingProfile)."""
    o = ctx.options
    p: FcrParams = _parse(FcrParams, o.extra)
    metrics: Metrics = await engine_timings(p.engine_units or o.stations, p.engine_rounds)
    if p.engine_only:
        return metrics
    fleet = StampedFleet(
        ctx.server.ws_prefix,
        ctx.credentials,
        handshake_timeout_s=min(60.0, o.timeout_s),
        answer_delay_s=p.answer_delay_ms / 1000.0,
    )
    feed: Feed | None = None
    try:
        stats = await fleet.connect(o.connect_concurrency, boot=True, timeout_s=o.timeout_s)
        metrics.update(
            stations=o.stations,
            connected=stats.connected,
            booted=stats.booted,
            connect_boot_s=round(stats.finished - stats.started, 3),
        )
        metrics["transactions_started"] = await fleet.start_transactions(o.timeout_s)
        charging = [s for s in fleet.stations if s.transaction_id is not None and s.transport]
        await _report_power(charging, o.timeout_s)
        power_w = await _until_power(
            ctx, 0.999 * len(charging) * frames.POWER_W, min(30.0, o.timeout_s)
        )
        metrics["fleet_power_w"] = power_w
        if len(charging) < o.stations:
            ctx.note(f"only {len(charging)} of {o.stations} stations are charging")
        feed = Feed(_poster(ctx), F0_HZ)
        await feed.start(max_s=o.timeout_s + p.repeats * 2 * (p.step_timeout_s + p.settle_s))
        bid_w = round(p.bid_share * power_w, 1)
        service_id = await _start_fcr(ctx, bid_w)
        metrics["fcr_bid_w"] = bid_w
        await asyncio.sleep(1.5)  # baseline captured, a few evaluations at 50.00 Hz
        expected = [s.index for s in charging] if p.bid_share >= 1.0 else []
        runs: dict[str, list[StepResult]] = {SET: [], CLEAR: []}
        ctx.start_profile()  # --profile: py-spy on the server over the steps
        # the loader's own full collections (10,000 stations) stalled its reading by
        # ~150 ms in one step of three: measured as server latency
        with loader_gc_paused():
            for _ in range(p.repeats):
                for action, hz in ((SET, STEP_HZ), (CLEAR, F0_HZ)):
                    want = len(expected) if expected else math.ceil(p.bid_share * len(charging))
                    result = await _step(ctx, fleet, feed, action, hz, want, p)
                    runs[action].append(result)
                    if not expected and action == SET:
                        expected = [i for i, t in enumerate(fleet.stamps) if not math.isnan(t)]
        await ctx.finish_profile()
        metrics["fcr_affected"] = len(expected)
        metrics.update(_step_metrics("fcr_set", runs[SET], expected))
        metrics.update(_step_metrics("fcr_release", runs[CLEAR], expected))
        backgrounds = [r.background for r in runs[SET] + runs[CLEAR]]
        metrics["background_cpu_cores"] = round(statistics.median(backgrounds), 3)
        metrics["feed_failures"] = feed.failures
        metrics["disconnects"] = fleet.disconnects
        audit = await ctx.http.get(f"/api/v1/services/{service_id}/audit")
        outcomes = Counter(a["outcome"] for a in audit.json()) if audit.is_success else Counter()
        metrics["audit_outcomes"] = ", ".join(f"{k}={v}" for k, v in outcomes.most_common(4))
        return metrics
    finally:
        if feed is not None:
            await feed.stop()
        await fleet.close()


@dataclass(frozen=True, slots=True)
class StepResult:
    latencies_s: list[float]  # per station (by index) from the POST; inf = not received
    http_s: float  # POST sent → its answer
    server_cpu_ms: float  # server CPU from the POST to the last station's frame
    server_share: float
    loader_share: float
    background: float
    # the server's own clock: the step's evaluation, targets → the gateway's pass over
    # every station returned (frames written); nan if the server does not say
    dispatch_s: float = math.nan
    dispatch_commands: int = 0


async def _step(
    ctx: BenchContext,
    fleet: StampedFleet,
    feed: Feed,
    action: str,
    hz: float,
    want: int,
    p: FcrParams,
) -> StepResult:
    fleet.arm(action, want)
    spinner = asyncio.create_task(_busy_poll(fleet.complete)) if p.loader_spin else None
    before = _clocks(ctx)
    sent, answered = await feed.step(hz)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(fleet.complete.wait(), p.step_timeout_s)
    after = _clocks(ctx)
    if spinner is not None:
        spinner.cancel()
    server, loader, other = _shares(before, after)
    result = StepResult(
        latencies_s=[t - sent if not math.isnan(t) else math.inf for t in fleet.stamps],
        http_s=answered - sent,
        server_cpu_ms=(after.server_s - before.server_s) * 1e3,
        server_share=server,
        loader_share=loader,
        background=other,
    )
    await asyncio.sleep(p.settle_s)  # answers handled, audit and command log written
    dispatch_s, commands = await _last_dispatch(ctx)
    return dataclasses.replace(result, dispatch_s=dispatch_s, dispatch_commands=commands)


async def _busy_poll(done: asyncio.Event) -> None:
    """Keep the loader's loop from sleeping in epoll until `done` (bounded by the step).

    On loopback the server's send wakes a sleeping loader in its own system call
    (the wake-up of the other core is charged to the sender); chargers on a network
    wake up on their own CPUs. A loop with a ready callback polls with timeout 0.
    """
    while not done.is_set():  # noqa: ASYNC110 - spinning is the point: never sleep in epoll
        await asyncio.sleep(0)


async def _last_dispatch(ctx: BenchContext) -> tuple[float, int]:
    """The server's last dispatching evaluation (`evflex_grid_last_dispatch_*` metrics)."""
    r = await ctx.http.get("/metrics")
    values: dict[str, float] = {}
    if r.is_success:
        for line in r.text.splitlines():
            name, _, value = line.partition(" ")
            if name.startswith("evflex_grid_last_dispatch_"):
                values[name] = float(value)
    return (
        values.get("evflex_grid_last_dispatch_seconds", math.nan),
        int(values.get("evflex_grid_last_dispatch_commands", 0)),
    )


def _step_metrics(prefix: str, steps: list[StepResult], expected: list[int]) -> Metrics:
    if not steps:
        return {}
    every: list[float] = []
    p99s: list[float] = []
    missing = 0
    stray = 0
    wanted = set(expected)
    for step in steps:
        lat = [step.latencies_s[i] for i in expected]
        stray += sum(
            1 for i, t in enumerate(step.latencies_s) if i not in wanted and math.isfinite(t)
        )
        missing += sum(1 for t in lat if math.isinf(t))
        every.extend(lat)
        p99 = summarize(lat).p99_ms
        p99s.append(math.inf if p99 is None else p99)
    out = _latency(prefix, every)
    out[f"{prefix}_p99_ms_per_step"] = " / ".join(
        "—" if math.isinf(v) else f"{v:.1f}" for v in p99s
    )
    out[f"{prefix}_samples"] = len(every)
    out[f"{prefix}_missing"] = missing
    out[f"{prefix}_stray"] = stray
    out[f"{prefix}_http_ms_median"] = round(statistics.median(s.http_s for s in steps) * 1e3, 2)
    dispatch = [s.dispatch_s * 1e3 for s in steps if math.isfinite(s.dispatch_s)]
    if dispatch:
        out[f"{prefix}_server_dispatch_ms_median"] = round(statistics.median(dispatch), 1)
        out[f"{prefix}_server_dispatch_ms_max"] = round(max(dispatch), 1)
        out[f"{prefix}_server_dispatch_commands"] = max(s.dispatch_commands for s in steps)
    out[f"{prefix}_server_cpu_ms_median"] = round(
        statistics.median(s.server_cpu_ms for s in steps), 1
    )
    out[f"{prefix}_server_cpu_share_median"] = round(
        statistics.median(s.server_share for s in steps), 3
    )
    out[f"{prefix}_loader_cpu_share_median"] = round(
        statistics.median(s.loader_share for s in steps), 3
    )
    return out


# -- fcr-delivery: the simulator, the record -------------------------------------------
@dataclass(frozen=True, slots=True)
class Row:
    ts: float
    target_w: float
    measured_w: float
    baseline_w: float


def parse_record(text: str) -> list[Row]:
    """`record.csv` → rows (ts as epoch seconds)."""
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        rows.append(
            Row(
                datetime.fromisoformat(r["ts"]).timestamp(),
                float(r["target_w"]),
                float(r["measured_w"]),
                float(r["baseline_w"]),
            )
        )
    return rows


def delivery_metrics(
    prefix: str,
    rows: Sequence[Row],
    step_ts: float,
    bid_w: float,
    reach_s: float,
    hold_s: float,
) -> Metrics:
    """Change = baseline − measured (W). Reached: the first row at or after the step
    with change ≥ 95 % of the bid. Hold: rows in (step + reach_s, step + reach_s +
    hold_s]; a row is "within" when |measured − target| ≤ 5 % of |target|."""
    after = [r for r in rows if r.ts >= step_ts]
    reached = next((r for r in after if r.baseline_w - r.measured_w >= 0.95 * bid_w), None)
    t95 = None if reached is None else round(reached.ts - step_ts, 2)
    at_reach = [r for r in after if r.ts <= step_ts + reach_s]
    change_at_reach = (
        (at_reach[-1].baseline_w - at_reach[-1].measured_w) / bid_w if at_reach else None
    )
    hold = [r for r in after if step_ts + reach_s < r.ts <= step_ts + reach_s + hold_s]
    within = [abs(r.measured_w - r.target_w) <= 0.05 * abs(r.target_w) for r in hold]
    within_bid = [abs(r.measured_w - r.target_w) <= 0.05 * bid_w for r in hold]
    changes = [(r.baseline_w - r.measured_w) / bid_w for r in hold]
    errors = [(r.measured_w - r.target_w) / abs(r.target_w) for r in hold if r.target_w]
    return {
        f"{prefix}_t95_s": t95,
        f"{prefix}_reached_95pct_in_time": t95 is not None and t95 <= reach_s,
        f"{prefix}_change_pct_of_bid_at_reach": None
        if change_at_reach is None
        else round(100 * change_at_reach, 1),
        f"{prefix}_hold_rows": len(hold),
        f"{prefix}_hold_within_5pct_of_target_share": round(sum(within) / len(hold), 4)
        if hold
        else None,
        f"{prefix}_hold_within_5pct_of_bid_share": round(sum(within_bid) / len(hold), 4)
        if hold
        else None,
        f"{prefix}_hold_change_pct_of_bid_median": round(100 * statistics.median(changes), 1)
        if changes
        else None,
        f"{prefix}_hold_change_pct_of_bid_min": round(100 * min(changes), 1) if changes else None,
        f"{prefix}_hold_error_pct_of_target_worst": round(100 * max(errors, key=abs), 2)
        if errors
        else None,
    }


def _csv_path(p: DeliveryParams, label: str) -> Path:
    if p.csv:
        return Path(p.csv)
    return Path("bench-results") / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}.csv"


async def _sample_truth(fleet: Fleet, out: list[Row], until: float, baseline_w: float) -> None:
    """The simulator's drawn power every second (ground truth), until `until` (perf)."""
    while perf() < until:
        power = sum(s.power_w for s in fleet.stations)
        out.append(Row(time.time(), math.nan, power, baseline_w))
        await asyncio.sleep(1.0)


@scenario("fcr-delivery")
async def fcr_delivery(ctx: BenchContext) -> Metrics:
    """Simulated fleet, FCR step to 49.8 Hz: 95 % of the bid in 10 s, then within ±5 %?

    1–5 s response delays, 5 % faulty chargers (ignore/reject); figures from the
    service's 1 s record (saved as CSV) and from the simulator's drawn power."""
    o = ctx.options
    p: DeliveryParams = _parse(DeliveryParams, o.extra)
    config = FleetConfig(
        csms=ctx.server.ws_prefix.rstrip("/"),
        stations=o.stations,
        mix=p.mix,
        seed=p.seed,
        prefix=f"D{secrets.token_hex(3)}-",
        password=_SIM_PASSWORD,
        sessions=SessionConfig(SessionMode.ALL, opt_out_share=0.0),
        faults=FaultConfig(parse_faults(p.faults)),
        delays=DelayModel(p.delay_min_s, p.delay_max_s, 0.0, p.delay_max_s),
        meter_interval_s=1,
        connect_concurrency=min(200, o.connect_concurrency),
    )
    await register(ctx.http, [(sid, _SIM_PASSWORD) for sid in station_ids(config)])
    metrics: Metrics = {"stations": o.stations}
    fleet = Fleet(config)
    feed: Feed | None = None
    truth_task: asyncio.Task[None] | None = None
    try:
        await fleet.start()
        if not await fleet.wait_booted(timeout_s=o.timeout_s):
            ctx.note(f"only {fleet.booted} of {o.stations} simulated stations booted")
        faults = Counter(s.fault for s in fleet.stations)
        metrics["booted"] = fleet.booted
        metrics["faulty_ignore"] = faults[Fault.IGNORE]
        metrics["faulty_reject"] = faults[Fault.REJECT]
        metrics["faulty_other"] = sum(
            v for k, v in faults.items() if k not in (Fault.NONE, Fault.IGNORE, Fault.REJECT)
        )
        await fleet.wait_until(
            lambda: sum(1 for s in fleet.stations if s.power_w > 0) >= fleet.booted,
            min(30.0, o.timeout_s),
        )
        sim_w = sum(s.power_w for s in fleet.stations)
        metrics["charging"] = sum(1 for s in fleet.stations if s.power_w > 0)
        metrics["sim_power_w"] = round(sim_w, 1)
        power_w = await _until_power(ctx, 0.99 * sim_w, min(30.0, o.timeout_s))
        metrics["fleet_power_w"] = power_w
        feed = Feed(_poster(ctx), F0_HZ)
        total_s = p.pre_s + p.reach_s + p.hold_s + 5.0
        await feed.start(max_s=total_s + 30.0)
        bid_w = round(p.bid_share * power_w, 1)
        metrics["fcr_bid_w"] = bid_w
        service_id = await _start_fcr(ctx, bid_w)
        truth: list[Row] = []
        truth_task = asyncio.create_task(_sample_truth(fleet, truth, perf() + total_s + 2.0, sim_w))
        await asyncio.sleep(p.pre_s)
        before = _clocks(ctx)
        step_ts = time.time()
        await feed.step(STEP_HZ)
        await asyncio.sleep(p.reach_s + p.hold_s + 1.5)  # + the last 1 s row
        after = _clocks(ctx)
        server, loader, other = _shares(before, after)
        r = await ctx.http.get(f"/api/v1/services/{service_id}/record.csv")
        r.raise_for_status()
        path = _csv_path(p, ctx.label)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(r.text)
        ctx.note(f"record CSV saved to {path}")
        rows = parse_record(r.text)
        metrics["record_csv"] = str(path)
        metrics["record_rows"] = len(rows)
        metrics.update(delivery_metrics("record", rows, step_ts, bid_w, p.reach_s, p.hold_s))
        target = [Row(t.ts, sim_w - bid_w, t.measured_w, sim_w) for t in truth]
        metrics.update(delivery_metrics("sim", target, step_ts, bid_w, p.reach_s, p.hold_s))
        audit = await ctx.http.get(f"/api/v1/services/{service_id}/audit")
        entries = audit.json() if audit.is_success else []
        outcomes = Counter(f"{a['action']}:{a['outcome']}" for a in entries)
        metrics["audit"] = ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items()))
        metrics["stations_commanded"] = len({a["station_id"] for a in entries})
        metrics["server_cpu_share"] = round(server, 3)
        metrics["loader_cpu_share"] = round(loader, 3)
        metrics["background_cpu_cores"] = round(other, 3)
        metrics["feed_failures"] = feed.failures
        (await ctx.http.delete(f"/api/v1/services/{service_id}")).raise_for_status()
        return metrics
    finally:
        if truth_task is not None:
            truth_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await truth_task
        if feed is not None:
            await feed.stop()
        await fleet.stop()
