"""A fleet of simulated stations in one process: build, connect, tick, observe, stop.

    config = FleetConfig(csms="ws://127.0.0.1:8180/ocpp", stations=1000, seed=7)
    async with Fleet(config) as fleet:
        await fleet.wait_connected(timeout_s=30)
        print(fleet.figures())

Connections are opened by a small pool of workers (`connect_concurrency`
handshakes at a time), so a 10,000-station start is quick without a SYN storm;
reconnects after a loss go through the same pool after the station's back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from picows import ws_connect

from evflex.sim.catalogue import DEFAULT_MIX, Ocpp
from evflex.sim.clock import Clock
from evflex.sim.faults import DelayModel, FaultConfig
from evflex.sim.link import Context, Link, SimEvent
from evflex.sim.mix import allocate, parse_mix, pick_model
from evflex.sim.passwords import basic_auth, derive_password
from evflex.sim.sessions import SessionConfig, SessionGenerator
from evflex.sim.station import Station
from evflex.sim.stats import Meter, Rates, Stats
from evflex.sim.ticker import Ticker

log = logging.getLogger(__name__)
_IDENTITY = re.compile(r"^[A-Za-z0-9*\-_=+|@.]{1,48}$")


@dataclass(frozen=True, slots=True)
class FleetConfig:
    csms: str = "ws://127.0.0.1:8180/ocpp"
    stations: int = 10
    mix: str = DEFAULT_MIX
    seed: int = 1
    prefix: str = "SIM-"
    first_index: int = 1
    password: str | None = None  # one password for every station ...
    secret: str | None = None  # ... or one per station derived from this secret
    sessions: SessionConfig = field(default_factory=SessionConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    delays: DelayModel = field(default_factory=DelayModel)
    meter_interval_s: int = 60  # initial MeterValueSampleInterval / TxUpdatedInterval
    delta_w: int = 0  # initial MeterValuePowerActiveImportDeltaTrigger (0 = off)
    connect_concurrency: int = 200
    tick_slots: int = 20
    call_timeout_s: float = 30.0
    handshake_timeout_s: float = 10.0
    observer: Callable[[SimEvent], None] | None = None

    def __post_init__(self) -> None:
        # OCPP 2.0.1 identity: printable, no ':' (it separates Basic auth), at most 48 chars;
        # the simulator also splices ids into pre-formatted JSON, so nothing to escape.
        if not _IDENTITY.match(f"{self.prefix}{self.first_index + self.stations:05d}"):
            raise ValueError(f"station id prefix {self.prefix!r}: use A-Z a-z 0-9 * - _ = + | @ .")
        if self.stations < 0 or self.first_index < 0:
            raise ValueError("stations and first_index must not be negative")


def station_id(config: FleetConfig, index: int) -> str:
    return f"{config.prefix}{index:05d}"


def station_ids(config: FleetConfig) -> list[str]:
    """The ids the fleet will use, e.g. to register them with the CSMS beforehand."""
    return [station_id(config, config.first_index + i) for i in range(config.stations)]


def password_for(config: FleetConfig, sid: str) -> str | None:
    if config.password is not None:
        return config.password
    if config.secret is not None:
        return derive_password(config.secret, sid)
    return None


def build_station(config: FleetConfig, ctx: Context, index: int, cls: str) -> Station:
    """Station number `index` of class `cls`; everything random comes from the seed."""
    from evflex.sim.v16 import V16Station
    from evflex.sim.v201 import V201Station

    sid = station_id(config, index)
    rng = random.Random(f"{config.seed}/{sid}")
    model = pick_model(cls, rng)
    fault = config.faults.assign(rng)
    sessions = SessionGenerator(model, config.sessions, rng, f"{index:05d}")
    password = password_for(config, sid)
    auth = basic_auth(sid, password) if password is not None else None
    kind = V16Station if model.ocpp is Ocpp.V16 else V201Station
    return kind(sid, model, ctx, rng=rng, sessions=sessions, auth_header=auth, fault=fault)


class Fleet:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.stations: list[Station] = []
        self._by_id: dict[str, Station] = {}
        self._ctx: Context | None = None
        self._ticker: Ticker | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[Link] = asyncio.Queue()
        self._meter: Meter | None = None
        self._overall: Meter | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- life cycle ----------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        c = self.config
        self._ctx = Context(
            loop=loop,
            clock=Clock(c.sessions.speed),
            stats=self.stats,
            delays=c.delays,
            reconnect=self._reconnect_later,
            changed=self._changed.set,
            observer=c.observer,
            meter_interval_s=c.meter_interval_s,
            delta_w=c.delta_w,
            slow_result_s=c.faults.slow_result_s,
            call_timeout_s=c.call_timeout_s,
        )
        classes = allocate(parse_mix(c.mix), c.stations, random.Random(c.seed))
        self.stations = [
            build_station(c, self._ctx, c.first_index + i, cls) for i, cls in enumerate(classes)
        ]
        self._by_id = {s.station_id: s for s in self.stations}
        self._meter = Meter(self.stats)
        self._overall = Meter(self.stats)
        for st in self.stations:
            self._queue.put_nowait(st)
        workers = max(1, min(c.connect_concurrency, len(self.stations)))
        self._workers = [asyncio.create_task(self._connect_worker()) for _ in range(workers)]
        self._ticker = Ticker(loop, self.stations, self.stats, c.tick_slots, self._changed.set)
        self._ticker.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Close every connection and stop the clock; bounded by `timeout_s`."""
        if self._ctx is not None:
            self._ctx.stopping = True
        if self._ticker is not None:
            self._ticker.stop()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        for st in self.stations:
            st.disconnect()
        await self.wait_until(lambda: self.connected == 0, timeout_s)

    async def _connect_worker(self) -> None:
        while True:
            st = await self._queue.get()
            if self._ctx is None or self._ctx.stopping or st.transport is not None:
                continue
            await self._connect(st)

    async def _connect(self, st: Link) -> None:
        assert isinstance(st, Station)
        headers = {"Sec-WebSocket-Protocol": st.model.ocpp.value}
        if st.auth_header is not None:
            headers["Authorization"] = st.auth_header
        url = f"{self.config.csms.rstrip('/')}/{st.station_id}"
        try:
            await ws_connect(
                lambda: st,
                url,
                extra_headers=headers,
                websocket_handshake_timeout=self.config.handshake_timeout_s,
                read_buffer_init_size=2048,
                logger_name="evflex.sim",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused, reset, 401, timeout: all mean "try later"
            self.stats.connect_failures += 1
            log.debug("%s: connect failed: %s", st.station_id, exc)
            self._reconnect_later(st, st.backoff_delay())

    def _reconnect_later(self, st: Link, delay_s: float) -> None:
        if self._ctx is not None and not self._ctx.stopping:
            self._ctx.loop.call_later(delay_s, self._queue.put_nowait, st)

    # -- observation ---------------------------------------------------------------
    def station(self, sid: str) -> Station:
        return self._by_id[sid]

    def snapshot(self) -> list[dict[str, Any]]:
        """Every station's `Station.snapshot()`."""
        return [s.snapshot() for s in self.stations]

    @property
    def connected(self) -> int:
        return sum(1 for s in self.stations if s.connected)

    @property
    def booted(self) -> int:
        return sum(1 for s in self.stations if s.boot == "accepted")

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait for `condition`, checked on connection events (connect, boot, loss) and after
        every round of the tick; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    async def wait_booted(self, count: int | None = None, timeout_s: float = 30.0) -> bool:
        """Wait until `count` (default: all) stations are booted; False on timeout."""
        want = len(self.stations) if count is None else count
        return await self.wait_until(lambda: self.booted >= want, timeout_s)

    def rates(self) -> Rates:
        """Messages/s and CPU since the previous call (or since start)."""
        if self._meter is None:
            self._meter = Meter(self.stats)
        return self._meter.sample(len(self.stations))

    def figures(self) -> dict[str, Any]:
        """Counters now, and rates since the previous call (for periodic reports)."""
        return {**self.counters(), **self.rates().as_dict()}

    def summary(self) -> dict[str, Any]:
        """Counters now, and rates since the fleet started."""
        overall = self._overall or Meter(self.stats)
        return {**self.counters(), **overall.sample(len(self.stations)).as_dict()}

    def counters(self) -> dict[str, Any]:
        s = self.stats
        return {
            "stations": len(self.stations),
            "connected": self.connected,
            "booted": self.booted,
            "charging": sum(1 for st in self.stations if st.power_w != 0.0),
            "power_kw": round(sum(st.power_w for st in self.stations) / 1000.0, 1),
            "sent": s.sent,
            "received": s.received,
            "connect_failures": s.connect_failures,
            "disconnects": s.disconnects,
            "call_timeouts": s.call_timeouts,
            "queue_drops": s.queue_drops,
            "profiles_received": s.profiles_received,
        }


async def run_fleet(
    config: FleetConfig,
    *,
    duration_s: float | None = None,
    report_every_s: float = 0.0,
    report: Callable[[dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Run a fleet until `duration_s` passes or `stop` is set; returns its `summary()`."""
    stop = stop or asyncio.Event()
    async with Fleet(config) as fleet:
        deadline = None if duration_s is None else time.monotonic() + duration_s
        step = report_every_s if report_every_s > 0 else 1.0
        while not stop.is_set():
            remaining = step if deadline is None else min(step, deadline - time.monotonic())
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), remaining)
            if report is not None and report_every_s > 0:
                report(fleet.figures())
        return fleet.summary()
