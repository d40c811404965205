"""`evflex demo`: the server and a simulated fleet in one process, on embedded defaults.

The fleet is the same simulator as `evflex sim` and reaches the server only over
loopback WebSockets; the demo merely starts both and narrates. Scenario: a mixed
fleet connects and boots, EV sessions ramp up (driver time accelerated), the
operator watches fleet power; once the fleet's charging power is known, an FCR
service is started with a bid of `fcr_share` of that power and a synthetic
frequency step to 49.8 Hz (full activation) is fed to the grid engine in-process.
Before exit the service is released and its delivery figures are printed,
computed from the service's 1 s record (`delivery_figures`, a pure function).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from evflex.app import App
from evflex.config import Settings
from evflex.control.loop import ActiveService, Fcr, RecordRow
from evflex.fleet.credentials import generate_password
from evflex.grid.samples import NOMINAL_HZ
from evflex.grid.synthetic import SyntheticSource, step
from evflex.sim import Fleet, FleetConfig, SessionConfig, SessionMode, station_ids
from evflex.telemetry.readiness import counts

DEMO_DB = Path("evflex-demo.db")
STEP_HZ = 49.8  # full FCR activation (−200 mHz)
FULL_ACTIVATION_S = 30.0  # SOGL: FCR fully activated within 30 s


@dataclass(frozen=True)
class DemoOptions:
    stations: int = 200
    duration_s: float | None = None  # None = until Ctrl+C
    headless: bool = False
    speed: float = 20.0  # driver seconds per real second: sessions ramp up visibly
    http_port: int = 8080
    ocpp_port: int = 8180
    db_path: Path = DEMO_DB
    fcr_after_s: float = 8.0  # start FCR this long after the fleet booted (power known)
    fcr_share: float = 0.3  # the bid: this share of the measured charging power
    fcr_lead_s: float = 2.0  # the feed holds 50.0 Hz this long before stepping to 49.8 Hz
    fcr_hold_s: float = 300.0  # release after this long at most (the 5 minutes)


async def run_demo(options: DemoOptions, console: Console) -> dict[str, Any]:
    """Run the scenario; returns the summary figures."""
    _fresh_db(options.db_path)
    settings = Settings(
        db=f"sqlite+aiosqlite:///{options.db_path}",
        http_port=_free_or_any(options.http_port),
        ocpp_port=_free_or_any(options.ocpp_port),
        heartbeat_interval_s=60,
        log_level="WARNING",
    )
    app = App(settings)
    fcr = FcrScenario(app, options, console)
    ports = await app.start()
    try:
        token = await app.repository.create_token("admin", "demo")
        console.print(
            f"[bold]evflex demo[/bold]: API http://127.0.0.1:{ports.http}/docs "
            f"(token {token}); OCPP ws://127.0.0.1:{ports.ocpp}/ocpp"
        )
        config = _fleet_config(options, ports.ocpp)
        await app.registry.register_many([(sid, config.password) for sid in station_ids(config)])
        async with Fleet(config) as fleet:
            booted = await fleet.wait_booted(timeout_s=60)
            console.print(
                f"{fleet.booted}/{options.stations} stations connected and booted"
                + ("" if booted else " [red](timed out)[/red]")
            )
            await _watch(app, options, console, fcr)
            fcr.release()  # before the stations go: evflex's limits are cleared, not left
            summary = await _summary(app, fleet)
    finally:
        fcr.release()
        await app.stop()
    console.print(_summary_table(summary))
    console.print(_fcr_table(fcr))
    return {**summary, "fcr": fcr_summary(fcr.figures())}


def _fleet_config(options: DemoOptions, ocpp_port: int) -> FleetConfig:
    return FleetConfig(
        csms=f"ws://127.0.0.1:{ocpp_port}/ocpp",
        stations=options.stations,
        seed=7,
        password=generate_password(),
        # every station gets an EV as it boots: fleet power ramps up as the fleet connects
        sessions=SessionConfig(mode=SessionMode.ALL, speed=options.speed),
        # the stations start with factory settings: evflex provisions grid-grade
        # telemetry (delta 100 W, periodic 300 s) as each one boots
    )


async def _watch(app: App, options: DemoOptions, console: Console, fcr: FcrScenario) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    deadline = started + options.duration_s if options.duration_s else None
    scenario = loop.create_task(fcr.run(started, deadline))
    try:
        with Live(
            _live_table(app, fcr),
            console=console,
            refresh_per_second=2,
            transient=options.headless,
        ) as live:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                live.update(_live_table(app, fcr))
                if scenario.done():
                    scenario.result()  # a failed scenario is an error, not a quiet demo
    finally:
        scenario.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scenario


def _live_table(app: App, fcr: FcrScenario) -> Table:
    s = app.fleet.summary()
    table = Table(title="fleet (live)", caption=fcr.live())
    for column in ("stations connected", "EVSEs charging", "sessions", "fleet power"):
        table.add_column(column, justify="right")
    table.add_row(
        str(s.stations_connected),
        str(s.evses_charging),
        str(_sessions(app)),
        f"{s.power_w / 1000:.1f} kW",
    )
    return table


def _sessions(app: App) -> int:
    return sum(
        1
        for st in app.fleet.stations.values()
        for e in st.evses.values()
        if e.transaction is not None
    )


async def _summary(app: App, fleet: Fleet) -> dict[str, Any]:
    await app.recorder.flush()
    s = app.fleet.summary()
    sim = fleet.counters()
    verdicts = counts(app.telemetry.readiness())
    fresh = app.telemetry.freshness()
    return {
        **{f"readiness_{verdict}": n for verdict, n in verdicts.items()},
        "power_known_within_5s": f"{fresh.share_within_5s:.0%}",
        "power_current": f"{fresh.share_current:.0%}",
        "stations_connected": s.stations_connected,
        "sessions_active": _sessions(app),
        "evses_charging": s.evses_charging,
        "fleet_power_kw": round(s.power_w / 1000, 1),
        "sim_power_kw": sim["power_kw"],
        "messages_from_stations": sim["sent"],
        "rows_stored": app.recorder.stats.rows_written,
    }


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table("figure", "value", title="evflex demo summary")
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    return table


def _free_or_any(port: int) -> int:
    """The requested port if it is free on loopback, else 0 (any): a demo should just run."""
    if port == 0:
        return 0
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def _fresh_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- FCR delivery ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeliveryFigures:
    """How an FCR activation was delivered, from the service's 1 s record rows.

    Percentages are of the bid: the measured portfolio change (measured − baseline,
    in the direction the service asked for) as a share of P_bid. `within_share` is
    the share of rows after full activation (from the first row at ≥ 95 %, or if that
    never came, from `FULL_ACTIVATION_S` after the step) whose measured power is within
    ±5 % of the bid of the target.
    """

    bid_w: float
    baseline_w: float | None  # at the step
    rows: int  # 1 s rows from the step on
    span_s: float  # from the step to the last row
    at_10s_pct: float | None  # the last row at ≤ 10 s after the step: delivered by 10 s
    at_10s_s: float | None  # that row's time after the step
    at_end_pct: float | None  # the last row
    t95_s: float | None  # first row at ≥ 95 % (s after the step); None: not reached
    within_share: float | None
    within_rows: int


def delivery_figures(rows: Sequence[RecordRow], bid_w: float, step_ts: float) -> DeliveryFigures:
    """Delivery figures of an FCR step at `step_ts` (epoch s) with bid `bid_w` (W)."""
    after = [r for r in rows if r.ts.timestamp() >= step_ts]
    if not after or bid_w <= 0:
        return DeliveryFigures(bid_w, None, len(after), 0.0, None, None, None, None, None, 0)
    down = any(r.target_w < r.baseline_w for r in after)
    sign = -1.0 if down else 1.0

    def pct(r: RecordRow) -> float:
        return 100.0 * sign * (r.measured_w - r.baseline_w) / bid_w

    def since(r: RecordRow) -> float:
        return r.ts.timestamp() - step_ts

    at_10 = next((r for r in reversed(after) if since(r) <= 10.0), None)
    reached = next((r for r in after if pct(r) >= 95.0), None)
    t95 = since(reached) if reached is not None else None
    full_from = t95 if t95 is not None else FULL_ACTIVATION_S
    full = [r for r in after if since(r) >= full_from]
    within = sum(1 for r in full if abs(r.measured_w - r.target_w) <= 0.05 * bid_w)
    return DeliveryFigures(
        bid_w=bid_w,
        baseline_w=after[0].baseline_w,
        rows=len(after),
        span_s=since(after[-1]),
        at_10s_pct=pct(at_10) if at_10 is not None else None,
        at_10s_s=since(at_10) if at_10 is not None else None,
        at_end_pct=pct(after[-1]),
        t95_s=t95,
        within_share=within / len(full) if full else None,
        within_rows=len(full),
    )


class FcrScenario:
    """The demo's FCR activation: bid from the measured power, a synthetic step, release.

    Frequency goes in through the app's push source (the same one the HTTP route
    feeds), the service through the engine: the whole path is evflex's own.
    """

    def __init__(self, app: App, options: DemoOptions, console: Console) -> None:
        self.app, self.options, self.console = app, options, console
        self.service: ActiveService | None = None
        self.bid_w = 0.0
        self.step_ts = math.inf
        self.skipped: str | None = None
        self.released_at: float | None = None
        self._feed: asyncio.Task[None] | None = None

    def url(self, service_id: str) -> str:
        return f"http://127.0.0.1:{self.app.ports.http}/api/v1/services/{service_id}/record.csv"

    async def run(self, started: float, deadline: float | None) -> None:
        """Activate once the fleet's power is known; hold; release (by `deadline` − 1 s)."""
        o = self.options
        power = await self._charging_power(started + o.fcr_after_s, deadline)
        if power is None:
            return
        self.bid_w = o.fcr_share * power
        t0 = time.time()
        self.step_ts = t0 + o.fcr_lead_s
        source = SyntheticSource(
            step(o.fcr_lead_s, NOMINAL_HZ, STEP_HZ),
            duration_s=o.fcr_lead_s + o.fcr_hold_s + 10.0,
            dt_s=0.2,  # a 5 Hz feed
            sigma_hz=0.0,  # a clean step: the figures show the fleet, not the noise
            t0=t0,
        )
        self._feed = asyncio.get_running_loop().create_task(self._pump(source))
        self.service = self.app.grid.activate("fcr", Fcr(self.bid_w))
        self.console.print(
            f"FCR {self.service.id}: bid {self.bid_w / 1000:.1f} kW "
            f"({o.fcr_share:.0%} of {power / 1000:.1f} kW charging), "
            f"step to {STEP_HZ} Hz in {o.fcr_lead_s:.0f} s; record {self.url(self.service.id)}"
        )
        end = self.step_ts + o.fcr_hold_s
        if deadline is not None:
            end = min(end, time.time() + (deadline - time.monotonic()) - 1.0)
        await asyncio.sleep(max(0.0, end - time.time()))
        self.release()

    async def _charging_power(self, not_before: float, deadline: float | None) -> float | None:
        """The fleet's measured power once it is known and steady; None if not in time."""
        room = self.options.fcr_lead_s + 12.0  # enough for the 10 s figure
        history: list[float] = []
        while True:
            now = time.monotonic()
            if deadline is not None and deadline - now < room:
                need = self.options.fcr_after_s + room
                self.skipped = f"the demo ends too soon for it (--duration ≥ {need:.0f} s)"
                return None
            power = self.app.fleet.summary().power_w
            history = [*history[-4:], power]
            steady = len(history) == 5 and max(history) - min(history) <= 0.03 * power
            if now >= not_before and power > 0 and (steady or now >= not_before + 4.0):
                return power
            await asyncio.sleep(0.5)  # the demo's pace, not a synchronisation

    async def _pump(self, source: SyntheticSource) -> None:
        async for sample in source:
            self.app.frequency.push(sample)

    def release(self) -> None:
        if self._feed is not None:
            self._feed.cancel()
            self._feed = None
        if self.service is not None and self.service.active:
            self.app.grid.deactivate(self.service.id)
            self.released_at = time.time()

    def figures(self) -> DeliveryFigures | None:
        if self.service is None:
            return None
        return delivery_figures(self.service.records, self.bid_w, self.step_ts)

    def live(self) -> str:
        """One line for the live view."""
        if self.service is None:
            return "FCR: " + (self.skipped or "starts once the fleet's power is known")
        state = self.app.grid.state()
        hz = f"{state.freq_hz:.3f} Hz" if state.freq_hz is not None else "no feed"
        if not self.service.active:
            return f"FCR {self.service.id}: released; grid {hz}"
        target = "–" if state.target_w is None else f"{state.target_w / 1000:.1f} kW"
        return (
            f"FCR {self.service.id}: grid {hz}, bid {self.bid_w / 1000:.1f} kW, "
            f"target {target}, measured {state.measured_w / 1000:.1f} kW"
        )


def _pct(value: float | None, at_s: float | None) -> str:
    if value is None or at_s is None:
        return "– (no record row yet)"
    return f"{value:.1f} % of the bid (row at {at_s:.1f} s)"


def _fcr_table(scenario: FcrScenario) -> Table | str:
    f = scenario.figures()
    service = scenario.service
    if f is None or service is None:
        return "FCR delivery: not run: " + (scenario.skipped or "the demo was stopped first")
    table = Table("figure", "value", title=f"FCR delivery ({service.id})")
    rows = [
        ("bid", f"{f.bid_w / 1000:.1f} kW"),
        ("baseline", "–" if f.baseline_w is None else f"{f.baseline_w / 1000:.1f} kW"),
        ("frequency", f"step {NOMINAL_HZ} → {STEP_HZ} Hz at {_iso(scenario.step_ts)}"),
        ("measured change at 10 s", _pct(f.at_10s_pct, f.at_10s_s)),
        ("measured change at end", _pct(f.at_end_pct, f.span_s if f.rows else None)),
        ("time to 95 %", "not reached" if f.t95_s is None else f"{f.t95_s:.1f} s"),
        (
            "rows within ±5 % of target after full activation",
            "–"
            if f.within_share is None
            else f"{100 * f.within_share:.1f} % of {f.within_rows} rows (1 s)",
        ),
        ("service id", service.id),
        ("record (CSV)", f"/api/v1/services/{service.id}/record.csv (rows also in grid_records)"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def fcr_summary(figures: DeliveryFigures | None) -> dict[str, Any] | None:
    return None if figures is None else asdict(figures)
