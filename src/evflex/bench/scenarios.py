"""The built-in scenarios: telemetry (fixed rate and saturation), broadcast, storm.

The grid-service scenarios (fcr, fcr-delivery) live in `evflex.bench.grid`.

Each returns flat metrics (numbers, None for "infinite / not reached") so runs can
be compared and their medians taken key by key.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from evflex.bench.loadgen import (
    ClosedLoopTelemetry,
    ConnectStats,
    LoadFleet,
    LoadStation,
    OpenLoopTelemetry,
)
from evflex.bench.runner import BenchContext, Metrics, scenario
from evflex.bench.server import system_busy_seconds
from evflex.bench.stats import LatencySummary, open_loop_latencies, stalls, summarize

perf = time.perf_counter
_BOUND = 0.9  # a process using ≥ 90 % of its core is treated as the bottleneck
_NOISY = 0.3  # cores used by everything else: above this the run measured a neighbour too
_STALL_S = 0.020
_STORE_COUNTERS = {
    "evflex_store_rows_written_total": "written",
    "evflex_store_rows_buffered": "buffered",
    "evflex_store_rows_dropped_total": "dropped",
    "evflex_store_writer_cpu_seconds_total": "writer_cpu_s",
}
SET_CHARGING_PROFILE = {
    "evse_id": 1,
    "profile": {
        "profile_id": 9,
        "stack_level": 5,
        "purpose": "tx_default",
        "unit": "W",
        "periods": [{"start_s": 0, "limit": 3700}],
    },
}


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU clocks of both processes at one instant."""

    at: float
    server_cpu_s: float
    loader_cpu_s: float
    system_busy_s: float


def take_sample(ctx: BenchContext) -> Sample:
    return Sample(perf(), ctx.server.cpu_seconds(), time.process_time(), system_busy_seconds())


def _background(start: Sample, end: Sample) -> float:
    """Cores used by everything but the server and the loader between two samples."""
    wall = end.at - start.at
    own = (end.server_cpu_s - start.server_cpu_s) + (end.loader_cpu_s - start.loader_cpu_s)
    return max(0.0, end.system_busy_s - start.system_busy_s - own) / wall if wall > 0 else 0.0


def cpu_metrics(start: Sample, end: Sample, messages: int) -> Metrics:
    """Throughput and CPU cost over [start, end]: shares are of one core."""
    wall = end.at - start.at
    server = end.server_cpu_s - start.server_cpu_s
    loader = end.loader_cpu_s - start.loader_cpu_s
    per_msg = server / messages * 1e6 if messages else None
    return {
        "window_s": round(wall, 3),
        "acked_msgs": messages,
        "msg_per_s": round(messages / wall, 1) if wall > 0 else None,
        "server_cpu_share": round(server / wall, 3) if wall > 0 else None,
        "loader_cpu_share": round(loader / wall, 3) if wall > 0 else None,
        # other processes + kernel work (incl. loopback softirq) in cores: a noisy
        # neighbour shows up here, and such a run's figures should not be trusted
        "background_cpu_cores": round(_background(start, end), 3) if wall > 0 else None,
        "server_cpu_us_per_msg": round(per_msg, 2) if per_msg is not None else None,
        # what one server core would sustain at this per-message cost
        "projected_max_msg_per_s": round(1e6 / per_msg) if per_msg else None,
    }


def bottleneck(metrics: Metrics) -> str:
    server = metrics.get("server_cpu_share")
    loader = metrics.get("loader_cpu_share")
    if isinstance(server, float) and server >= _BOUND:
        return "server"
    if isinstance(loader, float) and loader >= _BOUND:
        return "loader"
    background = metrics.get("background_cpu_cores")
    if isinstance(background, float) and background >= _NOISY:
        return "machine contention (see background_cpu_cores)"
    return "neither (offered load below capacity)"


def stall_metrics(load: OpenLoopTelemetry, window: tuple[float, float]) -> Metrics:
    """Pauses during which answers took > 20 ms (the p99 target): how many, how often."""
    found = stalls(load.schedule, load.acked_at, window, _STALL_S)
    starts = [s.start for s in found]
    every = (
        statistics.median(b - a for a, b in itertools.pairwise(starts)) if len(found) > 2 else None
    )
    peak = max((s.peak for s in found), default=0.0)
    return {
        "stalls_over_20ms": len(found),
        "stall_every_s_median": round(every, 2) if every is not None else None,
        "stall_longest_ms": round(max((s.end - s.start for s in found), default=0.0) * 1e3, 1),
        "stall_peak_ms": round(peak * 1e3, 1) if math.isfinite(peak) else None,
    }


def latency_metrics(prefix: str, summary: LatencySummary) -> Metrics:
    return {
        f"{prefix}_p50_ms": summary.p50_ms,
        f"{prefix}_p90_ms": summary.p90_ms,
        f"{prefix}_p99_ms": summary.p99_ms,
        f"{prefix}_p999_ms": summary.p999_ms,
        f"{prefix}_max_ms": summary.max_ms,
    }


def connect_metrics(stats: ConnectStats, stations: int) -> Metrics:
    handshake = summarize(stats.handshake_s)
    return {
        "stations": stations,
        "connected": stats.connected,
        "booted": stats.booted,
        "connect_boot_s": round(stats.finished - stats.started, 3),
        "handshake_p50_ms": handshake.p50_ms,
        "handshake_p99_ms": handshake.p99_ms,
        "connect_errors": sum(stats.errors.values()),
        "connect_error_kinds": ", ".join(f"{k}={v}" for k, v in stats.errors.most_common(5))
        or None,
    }


async def store_counters(ctx: BenchContext) -> dict[str, float]:
    """The server's persistence counters, scraped from /metrics (Prometheus text)."""
    try:
        response = await ctx.http.get("/metrics")
    except httpx.HTTPError:
        return {}
    if response.status_code != 200:
        return {}
    found: dict[str, float] = {}
    for line in response.text.splitlines():
        name, _, value = line.partition(" ")
        if name in _STORE_COUNTERS:
            with contextlib.suppress(ValueError):
                found[_STORE_COUNTERS[name]] = float(value)
    return found


class StoreProbe:
    """Does persistence keep up? Rows written in the window, and the backlog after it.

    The server acknowledges a MeterValues before it is written (it batches writes
    off the hot path), so throughput alone does not prove the store keeps up.
    """

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx
        self._at: list[asyncio.Task[dict[str, float]]] = []

    def mark(self) -> None:
        """Scrape now (callable from a timer callback: the scrape runs as a task)."""
        self._at.append(asyncio.ensure_future(store_counters(self.ctx)))

    async def metrics(self, acked: int, catchup_s: float = 30.0) -> Metrics:
        marks = [await t for t in self._at]
        out: Metrics = {}
        if len(marks) == 2 and "written" in marks[0] and "written" in marks[1]:
            written = marks[1]["written"] - marks[0]["written"]
            # 2 sampled values per MeterValues (+ coalesced EVSE/transaction state rows)
            out["store_rows_written_per_msg"] = round(written / acked, 2) if acked else None
        if len(marks) == 2 and "writer_cpu_s" in marks[0] and "writer_cpu_s" in marks[1]:
            # what persistence cost the server's core per answered message
            cpu_s = marks[1]["writer_cpu_s"] - marks[0]["writer_cpu_s"]
            out["store_writer_cpu_us_per_msg"] = round(cpu_s / acked * 1e6, 2) if acked else None
        end = await store_counters(self.ctx)
        out["store_rows_buffered_end"] = int(end.get("buffered", 0)) if end else None
        out["store_rows_dropped"] = int(end.get("dropped", 0)) if end else None
        started = perf()
        while end and end.get("buffered", 0) > 0 and perf() - started < catchup_s:
            await asyncio.sleep(0.25)
            end = await store_counters(self.ctx)
        caught_up = bool(end) and end.get("buffered", 0) == 0
        out["store_catchup_s"] = round(perf() - started, 2) if caught_up else None
        return out


@contextlib.contextmanager
def loader_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection in the load generator while it measures.

    The loader holds thousands of stations; its own full collections took 35-175 ms
    (measured with gc.callbacks), and a loader that stops reading for that long
    makes the server look late: latency is taken from each message's scheduled
    send time. The stations are frozen out of the collector once set up and
    collection is off for the (bounded) load run; reference counting still frees
    everything but cycles, which are collected afterwards.
    """
    gc.collect()
    gc.freeze()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()


def _call_at_perf(
    loop: asyncio.AbstractEventLoop, at: float, fn: Callable[[], None]
) -> asyncio.TimerHandle:
    """Schedule `fn` at perf_counter instant `at` (the loop has its own clock)."""
    return loop.call_at(loop.time() + (at - perf()), fn)


async def _connected_idle_fleet(ctx: BenchContext) -> tuple[LoadFleet, Metrics]:
    """Connect and boot every station, then read the server's RSS with them idle."""
    o = ctx.options
    fleet = ctx.fleet()
    await asyncio.sleep(o.settle_s)
    rss_before = ctx.server.rss_bytes()
    stats = await fleet.connect(o.connect_concurrency, boot=True, timeout_s=o.timeout_s)
    await asyncio.sleep(o.settle_s)
    rss_idle = ctx.server.rss_bytes()
    metrics = connect_metrics(stats, o.stations)
    metrics["server_rss_before_connect_mb"] = round(rss_before / 2**20, 1)
    metrics["server_rss_idle_mb"] = round(rss_idle / 2**20, 1)
    metrics["rss_per_idle_connection_kb"] = (
        round((rss_idle - rss_before) / stats.connected / 1024, 2) if stats.connected else None
    )
    return fleet, metrics


async def _charging(ctx: BenchContext, fleet: LoadFleet, metrics: Metrics) -> list[LoadStation]:
    started = await fleet.start_transactions(ctx.options.timeout_s)
    metrics["transactions_started"] = started
    ready = [s for s in fleet.stations if s.transaction_id is not None and s.transport]
    if len(ready) < ctx.options.stations:
        ctx.note(f"only {len(ready)} of {ctx.options.stations} stations are charging")
    return ready


@scenario("telemetry")
async def telemetry(ctx: BenchContext) -> Metrics:
    """Charging stations send MeterValues at a fixed rate each (open loop)."""
    if ctx.options.rate_hz is None:
        return await telemetry_max(ctx)
    o = ctx.options
    fleet, metrics = await _connected_idle_fleet(ctx)
    try:
        stations = await _charging(ctx, fleet, metrics)
        load = OpenLoopTelemetry(fleet, stations, o.rate_hz or 1.0, o.warmup_s + o.duration_s)
        samples: list[Sample] = []
        window_start = load.schedule.t0 + o.warmup_s
        window_end = window_start + o.duration_s
        timers = [
            _call_at_perf(fleet.loop, at, lambda: samples.append(take_sample(ctx)))
            for at in (window_start, window_end)
        ]
        timers.append(
            _call_at_perf(fleet.loop, window_start, lambda: ctx.start_profile(o.duration_s))
        )
        store = StoreProbe(ctx)
        timers += [_call_at_perf(fleet.loop, at, store.mark) for at in (window_start, window_end)]
        try:
            with loader_gc_paused():
                await load.run(o.drain_s)
            # the last send is due one interval before the window closes
            await asyncio.sleep(max(0.0, window_end - perf()) + 0.005)
        finally:
            for timer in timers:
                timer.cancel()
        if len(samples) != 2:
            raise RuntimeError("measurement window was not sampled")
        # the samples fire a few hundred µs late: use their real instants as the window
        window = (samples[0].at, samples[1].at)
        acked = sum(1 for t in load.acked_at if window[0] <= t < window[1])
        lat = open_loop_latencies(load.schedule, load.sent_at, load.acked_at, window)
        metrics["offered_msg_per_s"] = round(len(stations) * (o.rate_hz or 1.0), 1)
        metrics.update(cpu_metrics(samples[0], samples[1], acked))
        metrics.update(latency_metrics("ack", summarize(lat.corrected)))
        metrics.update(latency_metrics("service", summarize(lat.service)))
        lag = summarize(lat.send_lag)
        metrics["send_lag_p50_ms"], metrics["send_lag_p99_ms"] = lag.p50_ms, lag.p99_ms
        metrics.update(stall_metrics(load, window))
        metrics["scheduled_in_window"] = lat.scheduled
        metrics["lost_in_window"] = lat.scheduled - lat.acked
        metrics["unsent_in_window"] = lat.unsent
        metrics["call_errors"] = load.call_errors
        metrics["unanswered_total"] = load.sent - load.acked - load.call_errors
        metrics["disconnects"] = fleet.disconnects
        metrics["server_rss_end_mb"] = round(ctx.server.rss_bytes() / 2**20, 1)
        metrics["bottleneck"] = bottleneck(metrics)
        metrics.update(await store.metrics(acked))
    finally:
        await fleet.close()
    return metrics


@scenario("telemetry-max")
async def telemetry_max(ctx: BenchContext) -> Metrics:
    """Saturation: every station sends its next MeterValues as soon as one is answered."""
    o = ctx.options
    fleet, metrics = await _connected_idle_fleet(ctx)
    try:
        stations = await _charging(ctx, fleet, metrics)
        load = ClosedLoopTelemetry(
            fleet, stations, window=o.window, warmup_s=o.warmup_s, duration_s=o.duration_s
        )
        samples: list[Sample] = []
        store = StoreProbe(ctx)

        def on_window(edge: str) -> None:
            samples.append(take_sample(ctx))
            store.mark()
            if edge == "start":
                ctx.start_profile(o.duration_s)

        with loader_gc_paused():
            await load.run(o.drain_s, on_window)
        metrics["in_flight_per_station"] = o.window
        metrics.update(cpu_metrics(samples[0], samples[1], load.acked_in_window))
        metrics.update(latency_metrics("service", summarize(load.latencies)))
        metrics["call_errors"] = load.call_errors
        metrics["unanswered_total"] = load.sent - load.acked - load.call_errors
        metrics["disconnects"] = fleet.disconnects
        metrics["server_rss_end_mb"] = round(ctx.server.rss_bytes() / 2**20, 1)
        metrics["bottleneck"] = bottleneck(metrics)
        metrics.update(await store.metrics(load.acked_in_window))
        if metrics["bottleneck"] != "server":
            ctx.note(
                "the server core was not saturated: msg_per_s is a lower bound; "
                "projected_max_msg_per_s extrapolates the measured CPU cost per message"
            )
    finally:
        await fleet.close()
    return metrics


@scenario("broadcast")
async def broadcast(ctx: BenchContext) -> Metrics:
    """SetChargingProfile to every connected station through the fleet command API."""
    o = ctx.options
    fleet, metrics = await _connected_idle_fleet(ctx)
    server_ms: list[float] = []
    http_ms: list[float] = []
    loader_ms: list[float] = []
    accepted: list[int] = []
    server_cpu_ms: list[float] = []  # server CPU burnt per broadcast (10 ms /proc ticks)
    background: list[float] = []
    try:
        ctx.start_profile()
        for _ in range(o.repeats):
            fleet.calls_received.clear()
            before = take_sample(ctx)
            started = perf()
            response = await ctx.http.post(
                "/api/v1/fleet/commands/set_charging_profile", json=SET_CHARGING_PROFILE
            )
            http_ms.append((perf() - started) * 1000.0)
            after = take_sample(ctx)
            server_cpu_ms.append((after.server_cpu_s - before.server_cpu_s) * 1000.0)
            background.append(_background(before, after))
            if response.status_code != 200:
                raise RuntimeError(f"broadcast: HTTP {response.status_code} {response.text[:300]}")
            body: dict[str, Any] = response.json()
            server_ms.append(float(body["duration_ms"]))
            accepted.append(int(body["by_status"].get("Accepted", 0)))
            # loader's view: HTTP request sent → last station answer written
            loader_ms.append((fleet.last_call_answered - started) * 1000.0)
            if body.get("errors"):
                ctx.note(f"broadcast errors (first): {next(iter(body['errors'].items()))}")
            await asyncio.sleep(0.5)  # let the command log flush between repeats
        await ctx.finish_profile()
        metrics["repeats"] = o.repeats
        metrics.update(_medians("server_duration_ms", server_ms))
        metrics["http_roundtrip_ms_median"] = round(statistics.median(http_ms), 2)
        metrics["loader_last_answer_ms_median"] = round(statistics.median(loader_ms), 2)
        metrics["server_cpu_ms_per_broadcast_median"] = round(statistics.median(server_cpu_ms), 1)
        metrics["background_cpu_cores"] = round(statistics.median(background), 3)
        metrics["accepted_min"] = min(accepted)
        metrics["all_accepted"] = min(accepted) == metrics["connected"]
        metrics["disconnects"] = fleet.disconnects
    finally:
        await fleet.close()
    return metrics


def _medians(name: str, values: Sequence[float]) -> Metrics:
    return {
        f"{name}_median": round(statistics.median(values), 2),
        f"{name}_min": round(min(values), 2),
        f"{name}_max": round(max(values), 2),
        f"{name}_first": round(values[0], 2),
    }


@scenario("storm")
async def storm(ctx: BenchContext) -> Metrics:
    """Every station connects with Basic auth and boots at once; time to all Accepted."""
    o = ctx.options
    fleet = ctx.fleet()
    try:
        await asyncio.sleep(o.settle_s)
        rss_before = ctx.server.rss_bytes()
        ctx.start_profile()
        start = take_sample(ctx)
        stats = await fleet.connect(o.connect_concurrency, boot=True, timeout_s=o.timeout_s)
        end = take_sample(ctx)
        await ctx.finish_profile()
        metrics = connect_metrics(stats, o.stations)
        metrics["handshake_concurrency"] = o.connect_concurrency
        all_booted = stats.all_booted_s if stats.booted == o.stations else None
        metrics["all_accepted_s"] = round(all_booted, 3) if all_booted is not None else None
        boot_times = [t - stats.started for t in stats.booted_at]
        metrics.update(latency_metrics("accepted_after", summarize(boot_times)))
        cpu = cpu_metrics(start, end, stats.booted)
        metrics["server_cpu_share"] = cpu["server_cpu_share"]
        metrics["loader_cpu_share"] = cpu["loader_cpu_share"]
        metrics["server_cpu_us_per_station"] = cpu["server_cpu_us_per_msg"]
        metrics["background_cpu_cores"] = cpu["background_cpu_cores"]
        metrics["server_rss_after_mb"] = round(ctx.server.rss_bytes() / 2**20, 1)
        metrics["rss_per_connection_kb"] = (
            round((ctx.server.rss_bytes() - rss_before) / stats.connected / 1024, 2)
            if stats.connected
            else None
        )
        metrics["disconnects"] = fleet.disconnects
    finally:
        await fleet.close()
    return metrics
