"""Measure the WebSocket transport choice: `websockets` vs `picows`, same OCPP-J echo.

Each server is the minimal echo of `evflex.bench.echo` (orjson parse, CallResult
reply, nothing else), pinned to one core; the same picows load generator, pinned
to the other core, keeps `--window` MeterValues in flight per station (closed
loop) and the server's CPU is read from /proc/<pid>/stat over the window.

    .venv/bin/python benchmarks/transport_compare.py --stations 1000 --runs 3

msg/s is what was sustained; when the server core was not saturated (the loader
or the machine was the limit) µs/msg is still exact and projected_max =
1e6 / µs_per_msg is what one server core would sustain at that cost.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evflex.bench.echo import IMPLEMENTATIONS
from evflex.bench.loadgen import ClosedLoopTelemetry, LoadFleet
from evflex.bench.report import machine, median_metrics, write_json
from evflex.bench.runner import Metrics, raise_fd_limit, wait_for_quiet
from evflex.bench.server import (
    cpu_seconds,
    free_port,
    pin_self,
    rss_bytes,
    spawn_pinned,
    stop_process,
    system_busy_seconds,
)
from evflex.bench.stats import summarize

Sample = tuple[float, float, float, float]  # wall, server CPU, loader CPU, machine busy


def _log_text(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


async def _wait_ready(log: Path, timeout_s: float = 20.0) -> None:
    """The echo server prints "ready <port>" once it listens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "ready" in _log_text(log):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"echo server not ready: {_log_text(log)[-500:]}")


async def run_one(impl: str, args: argparse.Namespace, workdir: Path) -> Metrics:
    """One closed-loop run against a fresh echo server using `impl`."""
    port = free_port()
    log = workdir / f"{impl}-{port}.log"
    cmd = [sys.executable, "-m", "evflex.bench.echo", "--impl", impl, "--port", str(port)]
    proc = spawn_pinned(cmd, args.server_cpu, log)
    try:
        await _wait_ready(log)
        fleet = LoadFleet(
            f"ws://127.0.0.1:{port}/ocpp/", [(f"E{i:06d}", None) for i in range(args.stations)]
        )
        rss_before = rss_bytes(proc.pid)
        stats = await fleet.connect(200, boot=True, timeout_s=60)
        await asyncio.sleep(1.0)
        rss_idle = rss_bytes(proc.pid)
        charging = await fleet.start_transactions(60)
        load = ClosedLoopTelemetry(
            fleet,
            [s for s in fleet.stations if s.transaction_id is not None],
            window=args.window,
            warmup_s=args.warmup,
            duration_s=args.duration,
        )
        samples: list[Sample] = []

        def on_window(_: str) -> None:
            samples.append(
                (
                    time.perf_counter(),
                    cpu_seconds(proc.pid),
                    time.process_time(),
                    system_busy_seconds(),
                )
            )

        await load.run(5.0, on_window)
        await fleet.close()
    finally:
        stop_process(proc)
    (t0, s0, l0, b0), (t1, s1, l1, b1) = samples
    wall, server, loader = t1 - t0, s1 - s0, l1 - l0
    msgs = load.acked_in_window
    per_msg = server / msgs * 1e6 if msgs else None
    return {
        "stations": stats.connected,
        "charging": charging,
        "msg_per_s": round(msgs / wall, 1),
        "server_cpu_us_per_msg": round(per_msg, 2) if per_msg else None,
        "projected_max_msg_per_s": round(1e6 / per_msg) if per_msg else None,
        "server_cpu_share": round(server / wall, 3),
        "loader_cpu_share": round(loader / wall, 3),
        "background_cpu_cores": round(max(0.0, (b1 - b0) - server - loader) / wall, 3),
        "service_p50_ms": summarize(load.latencies).p50_ms,
        "service_p99_ms": summarize(load.latencies).p99_ms,
        "rss_per_idle_connection_kb": round((rss_idle - rss_before) / stats.connected / 1024, 2)
        if stats.connected
        else None,
        "call_errors": load.call_errors,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    pin_self(args.loader_cpu)
    raise_fd_limit(args.stations + 1024)
    results: dict[str, list[Metrics]] = {impl: [] for impl in args.impl}
    with tempfile.TemporaryDirectory(prefix="evflex-transport-") as tmp:
        for run in range(args.runs):
            for impl in args.impl:  # interleaved, so drift in machine load hits both
                background = await wait_for_quiet(args.quiet_wait, 0.15)
                metrics = await run_one(impl, args, Path(tmp))
                metrics["background_cores_before"] = round(background, 3)
                results[impl].append(metrics)
                Console(stderr=True).print(f"[dim]run {run + 1} {impl}: {metrics}[/dim]")
    return {
        "benchmark": "transport_compare",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "options": vars(args) | {"out": str(args.out)},
        "runs": results,
        "median": {impl: median_metrics(runs) for impl, runs in results.items()},
    }


def print_table(report: dict[str, Any]) -> None:
    medians: dict[str, Metrics] = report["median"]
    impls = list(medians)
    table = Table(title=f"transport compare (median of {report['options']['runs']} runs)")
    table.add_column("metric")
    for impl in impls:
        table.add_column(impl, justify="right")
    if {"picows", "websockets"} <= set(impls):
        table.add_column("picows / websockets", justify="right")
    for key in medians[impls[0]]:
        row = [str(medians[i].get(key)) for i in impls]
        if {"picows", "websockets"} <= set(impls):
            a, b = medians["picows"].get(key), medians["websockets"].get(key)
            ratio = (
                a / b if isinstance(a, int | float) and isinstance(b, int | float) and b else None
            )
            row.append(f"{ratio:.2f}×" if ratio is not None else "")
        table.add_row(key, *row)
    Console().print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="websockets vs picows: OCPP-J echo on one core")
    p.add_argument("--stations", type=int, default=1000)
    p.add_argument("--window", type=int, default=1, help="MeterValues in flight per station")
    p.add_argument("--duration", type=float, default=10.0, help="measurement window, s")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--impl", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS))
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--loader-cpu", type=int, default=1)
    p.add_argument("--quiet-wait", type=float, default=0.0, help="wait for a quiet machine, s")
    p.add_argument("--out", type=Path, default=Path("bench-results") / "transport-compare.json")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    import uvloop

    result = uvloop.run(main(arguments))
    print_table(result)
    print(f"results written to {write_json(result, arguments.out)}")
