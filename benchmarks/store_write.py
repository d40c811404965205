"""Micro-benchmark of the telemetry write path (evflex.store.writer.EventRecorder).

Measures, per backend and meter-sample write strategy:

* record µs/msg   - on-loop cost of `recorder(event)` for one MeterSampled (the part
                    that runs inside the OCPP message handler);
* flush µs/msg    - CPU of this process (event loop + driver threads) to turn one
                    message into rows and write them, from a bulk `flush()`;
* rows/s          - rows written per wall-clock second by that bulk flush;
* paced CPU %     - share of one core the recorder uses while messages arrive at a
                    steady `--rate` per second for `--seconds` (periodic flusher on),
                    and whether it kept up (rows still buffered at the end).

PostgreSQL server CPU is another process and is not included. Run:

    .venv/bin/python benchmarks/store_write.py [--events 50000] [--values 8] [--rate 25000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from evflex.fleet.events import MeterSampled, SampledValue
from evflex.store import db
from evflex.store.writer import EventRecorder

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

_MEASURANDS = (
    ("Energy.Active.Import.Register", "Wh", None),
    ("Power.Active.Import", "W", None),
    ("Current.Import", "A", "L1"),
    ("Current.Import", "A", "L2"),
    ("Current.Import", "A", "L3"),
    ("Voltage", "V", "L1-N"),
    ("Voltage", "V", "L2-N"),
    ("Voltage", "V", "L3-N"),
    ("SoC", "Percent", None),
    ("Frequency", None, None),
)


@dataclass
class Result:
    backend: str
    strategy: str
    record_us: float
    flush_us: float
    rows_per_s: float  # sampled values per second (a meter_values row holds a message's)
    paced_cpu_pct: float | None = None
    paced_rate: float | None = None
    paced_backlog: int | None = None


def make_events(count: int, values: int, stations: int) -> list[MeterSampled]:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    received = datetime.now(UTC)
    events = []
    for i in range(count):
        sampled = tuple(
            SampledValue(m, float(i % 1000) + k, unit, phase, "Sample.Periodic")
            for k, (m, unit, phase) in enumerate(_MEASURANDS[:values])
        )
        events.append(
            MeterSampled(
                f"CS-{i % stations:05d}",
                1 + i % 2,
                t0 + timedelta(milliseconds=i),
                received,
                sampled,
                f"{i % stations}",
            )
        )
    return events


# -- write strategies ---------------------------------------------------------------------


def use_strategy(recorder: EventRecorder, strategy: str) -> None:
    """Switch how meter samples are written (the rest of the batch is unchanged)."""
    codec = recorder._codec
    if strategy == "copy":
        codec.use_copy = True
    elif strategy == "executemany":
        codec.use_copy = False
    else:
        raise ValueError(strategy)


# -- measurements ---------------------------------------------------------------------------


async def bulk(engine: AsyncEngine, strategy: str, events: list[MeterSampled]) -> Result:
    recorder = EventRecorder(engine, max_buffer_rows=10**9)
    use_strategy(recorder, strategy)
    started = time.perf_counter()
    for event in events:
        recorder(event)
    record_s = time.perf_counter() - started

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await recorder.flush()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert recorder.stats.buffered_rows == 0, recorder.stats
    values = sum(len(e.values) for e in events)  # sampled values, one row per event
    return Result(
        engine.dialect.name,
        strategy,
        record_us=record_s / len(events) * 1e6,
        flush_us=cpu / len(events) * 1e6,
        rows_per_s=values / wall,
    )


async def paced(
    engine: AsyncEngine,
    strategy: str,
    events: list[MeterSampled],
    rate: int,
    seconds: float,
) -> tuple[float, float, int]:
    """Feed `rate` messages/s for `seconds`; return (CPU % of one core, achieved rate, backlog)."""
    recorder = EventRecorder(engine, max_buffer_rows=10**9)
    use_strategy(recorder, strategy)
    await recorder.start()
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    sent = 0
    loop = asyncio.get_running_loop()
    cpu0, start = time.process_time(), loop.time()
    next_tick = start
    while loop.time() - start < seconds:
        for _ in range(per_tick):
            recorder(events[sent % len(events)])
            sent += 1
        next_tick += tick
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
    elapsed = loop.time() - start
    cpu = time.process_time() - cpu0
    backlog = recorder.stats.buffered_rows
    await recorder.stop()
    return cpu / elapsed * 100.0, sent / elapsed, backlog


# -- databases ---------------------------------------------------------------------------


async def sqlite_engine(directory: Path) -> AsyncEngine:
    url = f"sqlite+aiosqlite:///{directory / f'{uuid.uuid4().hex}.db'}"
    await asyncio.to_thread(db.upgrade, url)
    return db.create_engine(url)


async def pg_engine(schema: str) -> AsyncEngine:
    conn = await asyncpg.connect(PG_URL.replace("+asyncpg", ""))
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    await asyncio.to_thread(db.upgrade, PG_URL, search_path=schema)
    return db.create_engine(PG_URL, search_path=schema)


async def drop_pg_schema(schema: str) -> None:
    conn = await asyncpg.connect(PG_URL.replace("+asyncpg", ""))
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.close()


async def run_backend(
    name: str,
    strategies: list[str],
    factory: Callable[[], Any],
    cleanup: Callable[[], Any] | None,
    events: list[MeterSampled],
    args: argparse.Namespace,
) -> list[Result]:
    results = []
    for strategy in strategies:
        engine = await factory()
        try:
            await bulk(engine, strategy, events[:1000])  # warm up: pool, statement caches
            result = await bulk(engine, strategy, events)
            if not args.no_paced:
                cpu, achieved, backlog = await paced(
                    engine, strategy, events, args.rate, args.seconds
                )
                result.paced_cpu_pct, result.paced_rate, result.paced_backlog = (
                    cpu,
                    achieved,
                    backlog,
                )
            results.append(result)
        finally:
            await engine.dispose()
            if cleanup is not None:
                await cleanup()
        print(f"  done: {name} / {strategy}", flush=True)
    return results


async def pg_reachable() -> bool:
    try:
        conn = await asyncpg.connect(PG_URL.replace("+asyncpg", ""), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def main(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop_note = "uvloop available (not used: asyncio loop)"
        del uvloop
    except ImportError:
        uvloop_note = "uvloop not installed"
    events = make_events(args.events, args.values, args.stations)
    print(
        f"{args.events} MeterSampled x {args.values} values, {args.stations} stations; "
        f"paced {args.rate}/s for {args.seconds} s; cpu count {os.cpu_count()}; {uvloop_note}"
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "sqlite" in args.backends:
            results += await run_backend(
                "sqlite",
                ["executemany"],
                lambda: sqlite_engine(Path(tmp)),
                None,
                events,
                args,
            )
    if "postgres" in args.backends:
        if await pg_reachable():
            schema = f"evflex_bench_{uuid.uuid4().hex[:8]}"
            results += await run_backend(
                "postgres",
                ["copy", "executemany"],
                lambda: pg_engine(schema),
                lambda: drop_pg_schema(schema),
                events,
                args,
            )
        else:
            print(f"PostgreSQL at {PG_URL} unreachable: skipped")
    print_table(results, args.values)


def print_table(results: list[Result], values: int) -> None:
    header = (
        f"{'backend':<11}{'samples via':<13}{'record µs/msg':>14}{'flush µs/msg':>14}"
        f"{'values/s':>11}{'msg/s':>10}{'paced CPU%':>12}{'paced msg/s':>13}{'backlog':>9}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        paced = (
            f"{r.paced_cpu_pct:>12.1f}{r.paced_rate:>13,.0f}{r.paced_backlog:>9,}"
            if r.paced_cpu_pct is not None and r.paced_rate is not None
            else f"{'-':>12}{'-':>13}{'-':>9}"
        )
        print(
            f"{r.backend:<11}{r.strategy:<13}{r.record_us:>14.2f}{r.flush_us:>14.2f}"
            f"{r.rows_per_s:>11,.0f}{r.rows_per_s / values:>10,.0f}{paced}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--values", type=int, default=8, help="sampled values per message")
    parser.add_argument("--stations", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=25_000, help="paced messages per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-paced", action="store_true")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    asyncio.run(main(parser.parse_args()))
