"""Scenario registry and the harness around every run.

A run: pin this (loader) process to its core → start `evflex serve` pinned to
another → create an admin token → register the stations with passwords through
the bulk API → run the scenario → always stop the server. A scenario is an
async callable taking a `BenchContext` and returning flat metrics; later ones
(`fcr`, ...) plug in with `@scenario("name")`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from evflex.bench.loadgen import LoadFleet
from evflex.bench.profile import Profiler
from evflex.bench.server import (
    EvflexServer,
    ServerOptions,
    fresh_database,
    pin_self,
    system_busy_seconds,
    usable_cpus,
)

Metric = float | int | str | bool | None
Metrics = dict[str, Metric]
Scenario = Callable[["BenchContext"], Awaitable[Metrics]]
SCENARIOS: dict[str, Scenario] = {}
_REGISTER_CHUNK = 1000  # stations per bulk request: bounded request bodies and DB batches


def scenario(name: str) -> Callable[[Scenario], Scenario]:
    """Register a scenario under `name` (the `evflex bench NAME` sub-command)."""

    def register(fn: Scenario) -> Scenario:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} is already registered")
        SCENARIOS[name] = fn
        return fn

    return register


@dataclass
class BenchOptions:
    """Every knob of a run; scenarios read the ones they need, plug-ins use `extra`."""

    stations: int = 5000
    rate_hz: float | None = 1.0  # None: saturation (closed loop)
    duration_s: float = 30.0
    warmup_s: float = 3.0
    window: int = 1  # saturation: MeterValues in flight per station
    repeats: int = 5  # broadcast: commands sent
    connect_concurrency: int = 500  # handshakes in progress at once
    timeout_s: float = 120.0  # bound on each set-up phase (connect, boot, transactions)
    drain_s: float = 5.0  # after the last send, wait this long for answers
    settle_s: float = 1.0  # idle time before reading "idle" RSS
    db: str | None = None
    server_cpu: int | None = 0
    loader_cpu: int | None = 1
    profile_dir: str | None = None  # record the server with py-spy into this directory
    quiet_wait_s: float = 0.0  # wait up to this long for other load to fall below the bar
    quiet_cores: float = 0.15  # "quiet": everything else uses less than this many cores
    max_background: float | None = None  # redo runs noisier than this (cores), see cli
    retries: int = 3
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchContext:
    """What a scenario gets: the options, the running server, an API client, credentials."""

    options: BenchOptions
    server: EvflexServer
    http: httpx.AsyncClient
    credentials: list[tuple[str, str | None]]
    notes: list[str] = field(default_factory=list)
    label: str = "run"
    profile: dict[str, Any] | None = None
    _profiler: Profiler | None = None

    def fleet(self) -> LoadFleet:
        """A new load fleet for the registered stations (not yet connected)."""
        return LoadFleet(
            self.server.ws_prefix,
            self.credentials,
            handshake_timeout_s=min(60.0, self.options.timeout_s),
        )

    def note(self, text: str) -> None:
        self.notes.append(text)

    def start_profile(self, duration_s: float | None = None) -> None:
        """With --profile, sample the server with py-spy for `duration_s` (None: until
        `finish_profile`)."""
        if self.options.profile_dir is None:
            return
        out = Path(self.options.profile_dir) / f"{self.label}.collapsed.txt"
        self._profiler = Profiler(self.server.pid, out, duration_s)
        try:
            started = self._profiler.start()
        except OSError as exc:
            started = False
            self.note(f"--profile: {exc}")
        else:
            if not started:
                self.note("--profile: py-spy not found (pip install py-spy)")
        if not started:
            self._profiler = None

    async def finish_profile(self) -> None:
        if self._profiler is not None:
            self.profile = await self._profiler.finish()
            self._profiler = None


def station_credentials(count: int, run_id: str) -> list[tuple[str, str | None]]:
    """Unique ids per run (a reused PostgreSQL database keeps earlier runs' stations)."""
    secret = secrets.token_urlsafe(12)  # 16 chars; with the suffix 25, inside 16–40
    return [(f"B{run_id}-{i:06d}", f"{secret}-{i:08d}") for i in range(count)]


async def register(http: httpx.AsyncClient, credentials: list[tuple[str, str | None]]) -> int:
    created = 0
    for start in range(0, len(credentials), _REGISTER_CHUNK):
        chunk = credentials[start : start + _REGISTER_CHUNK]
        response = await http.post(
            "/api/v1/stations/bulk", json=[{"id": sid, "password": pw} for sid, pw in chunk]
        )
        if response.status_code != 201:
            raise RuntimeError(
                f"bulk registration failed: HTTP {response.status_code} {response.text[:500]}"
            )
        created += int(response.json()["created"])
    return created


def raise_fd_limit(needed: int) -> int:
    """Raise the soft open-files limit (the server inherits it) towards `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


class BenchError(RuntimeError):
    """A run failed; the message carries the server's log tail."""


def placement(options: BenchOptions) -> tuple[bool, list[str]]:
    """Pin the loader; returns (pinned, notes about the CPU layout)."""
    notes: list[str] = []
    cpus = usable_cpus()
    if options.server_cpu is not None and options.server_cpu == options.loader_cpu:
        notes.append("server and loader share one core: figures are not comparable")
    pinned = pin_self(options.loader_cpu)
    if not pinned and options.loader_cpu is not None:
        notes.append(f"loader not pinned: CPU {options.loader_cpu} not in {sorted(cpus)}")
    if options.server_cpu is not None and options.server_cpu not in cpus:
        notes.append(f"server not pinned: CPU {options.server_cpu} not in {sorted(cpus)}")
    return pinned, notes


async def background_load(seconds: float = 1.0) -> float:
    """Cores busy over `seconds` excluding this process (the server is not running yet)."""
    busy, own = system_busy_seconds(), time.process_time()
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - started
    return max(0.0, system_busy_seconds() - busy - (time.process_time() - own)) / wall


async def wait_for_quiet(max_wait_s: float, cores: float) -> float:
    """Wait (bounded) until the rest of the machine uses < `cores`; returns the last reading.

    The machine is small and may be shared: a run next to a busy neighbour
    measures the neighbour. Waiting is bounded; the reading goes into the record.
    """
    deadline = time.monotonic() + max_wait_s
    load = await background_load()
    while load >= cores and time.monotonic() < deadline:
        load = await background_load()
    return load


@dataclass
class BenchServer:
    """A running server plus an admin API client: one or more scenarios run against it."""

    server: EvflexServer
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def bench_server(options: BenchOptions) -> AsyncIterator[BenchServer]:
    """Start `evflex serve` on a fresh database; always stop it on the way out."""
    with tempfile.TemporaryDirectory(prefix="evflex-bench-") as tmp:
        async with contextlib.AsyncExitStack() as fresh:
            db = options.db
            if db is not None:  # PostgreSQL: a new database for this run, dropped after it
                try:
                    db = await fresh.enter_async_context(fresh_database(db))
                except Exception as exc:
                    raise BenchError(f"no fresh database next to {db}: {exc!r}") from exc
            server = EvflexServer(ServerOptions(db=db, cpu=options.server_cpu), Path(tmp))
            try:
                await server.start()
                async with httpx.AsyncClient(
                    base_url=server.http_base,
                    headers={"Authorization": f"Bearer {server.token}"},
                    timeout=options.timeout_s,
                    trust_env=False,  # loopback only: never through a configured proxy
                ) as http:
                    yield BenchServer(server, http)
            except Exception as exc:
                raise BenchError(
                    f"{type(exc).__name__}: {exc}\nserver log tail:\n{server.log_tail()}"
                ) from exc
            finally:
                with contextlib.suppress(Exception):
                    server.stop()


async def run_scenario(
    name: str,
    options: BenchOptions,
    target: BenchServer,
    *,
    label: str | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Register `options.stations` new stations on `target` and run scenario `name`."""
    fn = SCENARIOS[name]
    notes = [] if notes is None else notes
    credentials = station_credentials(options.stations, secrets.token_hex(3))
    started = time.time()
    await register(target.http, credentials)
    ctx = BenchContext(options, target.server, target.http, credentials, notes, label or name)
    try:
        metrics = await fn(ctx)
    finally:
        await ctx.finish_profile()
    if not target.server.alive():
        notes.append("the server died during the run")
    return {
        "scenario": name,
        "started_at": started,
        "elapsed_s": round(time.time() - started, 3),
        "server_pinned_cpu": options.server_cpu if target.server.pinned else None,
        "server_affinity": sorted(os.sched_getaffinity(target.server.pid))
        if target.server.alive()
        else None,
        "loader_affinity": sorted(os.sched_getaffinity(0)),
        "db": "sqlite (fresh temp file)"
        if options.db is None
        else f"{options.db} (a fresh database per run)",
        "metrics": metrics,
        "notes": notes,
        "profile": ctx.profile,
    }


async def run_once(name: str, options: BenchOptions, label: str | None = None) -> dict[str, Any]:
    """One run of scenario `name` against a fresh server, from a pinned loader."""
    loader_pinned, notes = placement(options)
    fd_limit = raise_fd_limit(options.stations + 1024)
    if fd_limit < options.stations + 64:
        notes.append(f"open-files limit {fd_limit} is below the station count")
    background = await wait_for_quiet(options.quiet_wait_s, options.quiet_cores)
    if background >= options.quiet_cores:
        notes.append(f"the machine was busy before the run: {background:.2f} cores in use")
    try:
        async with bench_server(options) as target:
            record = await run_scenario(name, options, target, label=label, notes=notes)
    except BenchError as exc:
        raise BenchError(f"{name} failed: {exc}") from exc
    record["loader_pinned_cpu"] = options.loader_cpu if loader_pinned else None
    record["background_cores_before"] = round(background, 3)
    return record
