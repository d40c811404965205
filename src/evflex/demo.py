"""`evflex demo`: the server and a simulated fleet in one process, on embedded defaults.

The fleet is the same simulator as `evflex sim` and reaches the server only over
loopback WebSockets; the demo merely starts both and narrates. Scenario: a mixed
fleet connects and boots, EV sessions ramp up (driver time accelerated), the
operator watches fleet power; a frequency event joins once the grid engine exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from evflex.app import App
from evflex.config import Settings
from evflex.fleet.credentials import generate_password
from evflex.sim import Fleet, FleetConfig, SessionConfig, SessionMode, station_ids
from evflex.telemetry.readiness import counts

DEMO_DB = Path("evflex-demo.db")


@dataclass(frozen=True)
class DemoOptions:
    stations: int = 200
    duration_s: float | None = None  # None = until Ctrl+C
    headless: bool = False
    speed: float = 20.0  # driver seconds per real second: sessions ramp up visibly
    http_port: int = 8080
    ocpp_port: int = 8180
    db_path: Path = DEMO_DB


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
            await _watch(app, options, console)
            summary = await _summary(app, fleet)
    finally:
        await app.stop()
    console.print(_summary_table(summary))
    return summary


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


async def _watch(app: App, options: DemoOptions, console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + options.duration_s if options.duration_s else None
    with Live(
        _live_table(app), console=console, refresh_per_second=2, transient=options.headless
    ) as live:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            live.update(_live_table(app))


def _live_table(app: App) -> Table:
    s = app.fleet.summary()
    table = Table(title="fleet (live)")
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
