"""`evflex sim`: run a simulated fleet against a CSMS.

Mount with `app.add_typer(sim_app, name="sim")` (the command is the group's
callback, so `evflex sim --stations 100` runs it), or register `sim_command`
directly with `app.command("sim")(sim_command)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from evflex.sim.catalogue import DEFAULT_MIX
from evflex.sim.faults import DelayModel, FaultConfig, parse_faults
from evflex.sim.fleet import FleetConfig, run_fleet
from evflex.sim.mix import parse_mix
from evflex.sim.sessions import PROFILES, SessionConfig, SessionMode

console = Console(stderr=True)
sim_app = typer.Typer(help="Simulate a fleet of OCPP charging stations.")


def sim_command(
    csms: Annotated[str, typer.Option(help="CSMS WebSocket base URL")] = "ws://127.0.0.1:8180/ocpp",
    stations: Annotated[int, typer.Option(min=1, max=100_000, help="number of stations")] = 10,
    mix: Annotated[str, typer.Option(help="class:weight,... (ac16 ac201 dc201 v2g201 bess16)")] = (
        DEFAULT_MIX
    ),
    seed: Annotated[int, typer.Option(help="random seed: same seed, same fleet")] = 1,
    password: Annotated[str | None, typer.Option(help="one Basic-auth password for all")] = None,
    secret: Annotated[str | None, typer.Option(help="derive a password per station")] = None,
    prefix: Annotated[str, typer.Option(help="station id prefix")] = "SIM-",
    speed: Annotated[float, typer.Option(min=0.001, help="driver-time acceleration")] = 1.0,
    sessions: Annotated[SessionMode, typer.Option(help="EV sessions")] = SessionMode.PROFILE,
    profile: Annotated[str | None, typer.Option(help=f"daily profile: {', '.join(PROFILES)}")] = (
        None
    ),
    opt_out: Annotated[float, typer.Option(min=0, max=100, help="% of drivers opting out")] = 10,
    meter_interval: Annotated[int, typer.Option(min=0, help="initial sample interval, s")] = 60,
    delta_w: Annotated[int, typer.Option(min=0, help="initial 1.6 delta trigger, W")] = 0,
    faults: Annotated[str, typer.Option(help="ignore:P,reject:P,slow:P,drop:P (percent)")] = "",
    delay_min: Annotated[float, typer.Option(help="profile apply delay, low, s")] = 1.0,
    delay_max: Annotated[float, typer.Option(help="profile apply delay, high, s")] = 5.0,
    delay_tail: Annotated[float, typer.Option(help="% of applies in the slow tail")] = 5.0,
    delay_tail_max: Annotated[float, typer.Option(help="slow tail up to, s")] = 30.0,
    concurrency: Annotated[int, typer.Option(min=1, help="concurrent handshakes")] = 200,
    duration: Annotated[float, typer.Option(min=0, help="stop after s (0 = Ctrl-C)")] = 0.0,
    report_every: Annotated[float, typer.Option(min=0, help="print figures every s")] = 5.0,
    json_lines: Annotated[bool, typer.Option("--json", help="figures as JSON lines")] = False,
) -> None:
    """Run N simulated stations, each a real OCPP client on its own WebSocket."""
    try:
        parse_mix(mix)
        if profile is not None and profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        config = FleetConfig(
            csms=csms,
            stations=stations,
            mix=mix,
            seed=seed,
            prefix=prefix,
            password=password,
            secret=secret,
            sessions=SessionConfig(sessions, profile, opt_out / 100.0, speed),
            faults=FaultConfig(parse_faults(faults)),
            delays=DelayModel(delay_min, delay_max, delay_tail / 100.0, delay_tail_max),
            meter_interval_s=meter_interval,
            delta_w=delta_w,
            connect_concurrency=concurrency,
        )
    except ValueError as exc:
        console.print(f"[red]invalid option:[/red] {exc}")
        raise typer.Exit(2) from None
    report = _json_report if json_lines else _text_report
    final = _run(_main(config, duration or None, report_every, report))
    report(final)


sim_app.callback(invoke_without_command=True)(sim_command)


async def _main(
    config: FleetConfig,
    duration: float | None,
    every: float,
    report: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return await run_fleet(
        config, duration_s=duration, report_every_s=every, report=report, stop=stop
    )


def _run(coro: Any) -> dict[str, Any]:
    try:
        import uvloop

        result: dict[str, Any] = uvloop.run(coro)
    except ImportError:  # pragma: no cover - no uvloop on Windows
        result = asyncio.run(coro)
    return result


def _text_report(f: dict[str, Any]) -> None:
    console.print(
        f"stations {f['connected']}/{f['stations']} connected, {f['booted']} booted, "
        f"{f['charging']} flowing, {f['power_kw']} kW | sent {f['sent_per_s']}/s "
        f"received {f['received_per_s']}/s | CPU {f['cpu_share'] * 100:.1f}% "
        f"({f['cpu_us_per_station_s']} µs/station·s) | profiles {f['profiles_received']}"
    )


def _json_report(f: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(f).decode() + "\n")
    sys.stdout.flush()
