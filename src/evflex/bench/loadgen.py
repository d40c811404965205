"""A minimal, fast OCPP 1.6J load generator over picows.

Design, because the loader must stay cheaper than the server it measures:
- one `LoadStation` (a picows listener, no task) per connection;
- frames are pre-built byte pieces (see `frames`), answers parsed with orjson;
- open-loop load is driven by ONE shared timer that sends every message whose
  scheduled time has passed, spreading each period's sends evenly over stations;
- closed-loop (saturation) load sends the next frame from inside the callback
  that received the previous answer;
- every phase has a deadline, so nothing here can run forever.

It talks to the server only over the wire and imports nothing from it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import math
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from picows import (
    WSFrame,
    WSHandshakeError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from evflex.bench import frames
from evflex.bench.stats import OpenLoopSchedule, nan_array

perf = time.perf_counter
ReplyHandler = Callable[["LoadStation", str, bool, float], None]
_TEXT = WSMsgType.TEXT


class LoadStation(WSListener):
    """One simulated station: its socket, pending setup calls and MeterValues prefix."""

    def __init__(self, fleet: LoadFleet, index: int, station_id: str, password: str | None):
        super().__init__()
        self.fleet = fleet
        self.index = index
        self.station_id = station_id
        self.password = password
        self.transport: WSTransport | None = None
        self.pending: dict[str, asyncio.Future[list[Any]]] = {}
        self.setup_seq = 0
        self.transaction_id: int | None = None
        self.mv_prefix = b""
        self.energy_wh = 0
        # closed loop: send times of the frames in flight; OCPP-J answers arrive in order
        self.sent_at: deque[float] = deque()

    # -- picows callbacks ----------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.transport = None
        self.fleet.on_disconnect(self)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"{self.station_id} disconnected"))
        self.pending.clear()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        now = perf()
        msg_type = frame.msg_type
        if msg_type is not _TEXT:
            if msg_type is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        msg = orjson.loads(frame.get_payload_as_memoryview())
        kind = msg[0]
        if kind == frames.CALLRESULT or kind == frames.CALLERROR:
            message_id = msg[1]
            if self.pending:
                future = self.pending.pop(message_id, None)
                if future is not None:
                    if not future.done():
                        future.set_result(msg)
                    return
            self.fleet.reply_handler(self, message_id, kind == frames.CALLRESULT, now)
        elif kind == frames.CALL:
            self.fleet.on_call(self, msg, now)

    # -- sending -------------------------------------------------------------------
    def send(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None:
            return False
        transport.send(_TEXT, data)
        return True

    def setup_call(self, build: Callable[[str], bytes]) -> asyncio.Future[list[Any]]:
        """Send a setup CALL (Boot, StartTransaction); the future gets the answer frame."""
        self.setup_seq += 1
        message_id = f"s{self.setup_seq}"
        future: asyncio.Future[list[Any]] = self.fleet.loop.create_future()
        if self.send(build(message_id)):
            self.pending[message_id] = future
        else:
            future.set_exception(ConnectionError(f"{self.station_id} is not connected"))
        return future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.send_close()
            self.transport.disconnect()


@dataclass
class ConnectStats:
    """What happened while a fleet connected (and booted)."""

    started: float
    handshake_s: array[float] = field(default_factory=lambda: array("d"))
    booted_at: array[float] = field(default_factory=lambda: array("d"))  # perf_counter
    connected: int = 0
    booted: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    finished: float = math.nan

    @property
    def all_booted_s(self) -> float | None:
        """Start → the last BootNotification accepted, if every one was."""
        if not self.booted_at:
            return None
        return max(self.booted_at) - self.started


class LoadFleet:
    """The simulated stations of one loader process."""

    def __init__(
        self,
        url_prefix: str,
        credentials: Sequence[tuple[str, str | None]],
        *,
        handshake_timeout_s: float = 30.0,
    ) -> None:
        self.url_prefix = url_prefix  # ws://host:port/ocpp/
        self.handshake_timeout_s = handshake_timeout_s
        self.loop = asyncio.get_running_loop()
        self.stations = [
            LoadStation(self, i, station_id, password)
            for i, (station_id, password) in enumerate(credentials)
        ]
        self.reply_handler: ReplyHandler = self._stray_reply
        self.calls_received: Counter[str] = Counter()
        self.last_call_answered = math.nan
        self.stray_replies = 0
        self.disconnects = 0
        self.closing = False

    @property
    def connected(self) -> list[LoadStation]:
        return [s for s in self.stations if s.transport is not None]

    # -- callbacks from stations ---------------------------------------------------
    def on_call(self, station: LoadStation, msg: list[Any], now: float) -> None:
        """A CSMS→station CALL (its frame read at `now`): answer Accepted at once, as a
        healthy station would."""
        self.calls_received[str(msg[2])] += 1
        station.send(frames.accepted_result(msg[1]))
        self.last_call_answered = perf()

    def on_disconnect(self, station: LoadStation) -> None:
        if not self.closing:
            self.disconnects += 1

    def _stray_reply(self, station: LoadStation, message_id: str, ok: bool, now: float) -> None:
        self.stray_replies += 1

    # -- phases --------------------------------------------------------------------
    async def connect(
        self,
        concurrency: int,
        *,
        boot: bool,
        timeout_s: float,
    ) -> ConnectStats:
        """Open every connection with at most `concurrency` handshakes in progress.

        With `boot`, each station sends BootNotification as soon as its socket is
        open (not gated by the concurrency limit: it is the handshakes a real
        fleet's jitter spreads, the boots follow immediately).
        """
        stats = ConnectStats(started=perf())
        deadline = stats.started + timeout_s
        todo = iter(self.stations)  # shared by the workers: one event loop, no races
        boots: list[asyncio.Future[list[Any]]] = []
        answered_at: dict[asyncio.Future[list[Any]], float] = {}

        async def worker() -> None:
            for station in todo:
                if perf() >= deadline:
                    stats.errors["timeout"] += 1
                    continue
                if await self._open(station, stats, deadline) and boot:
                    future = station.setup_call(
                        functools.partial(frames.boot_notification, index=station.index)
                    )
                    # the answer's time (for the storm's figures); counted below
                    future.add_done_callback(lambda f: answered_at.setdefault(f, perf()))
                    boots.append(future)

        # Handshakes are bounded by their own timeout (cut to the deadline) rather than
        # cancelled: picows does not close a socket whose upgrade wait is cancelled.
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        pending = [f for f in boots if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - perf()))
        # counted here, not in done-callbacks: a callback of a future that completed
        # just before this point may not have run yet (call_soon), and the boot
        # would go uncounted
        now = perf()
        for future in boots:
            if future.done():
                _record_boot(future, stats, answered_at.get(future, now))
        stats.errors["boot_timeout"] += sum(not f.done() for f in boots)
        if not stats.errors["boot_timeout"]:
            del stats.errors["boot_timeout"]
        stats.finished = perf()
        return stats

    async def _open(self, station: LoadStation, stats: ConnectStats, deadline: float) -> bool:
        headers = {"Sec-WebSocket-Protocol": frames.SUBPROTOCOL}
        if station.password is not None:
            token = f"{station.station_id}:{station.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        started = perf()
        try:
            await ws_connect(
                lambda: station,
                self.url_prefix + station.station_id,
                extra_headers=headers,
                websocket_handshake_timeout=max(
                    0.01, min(self.handshake_timeout_s, deadline - started)
                ),
                # 16 KiB default per socket is wasted on ~300-byte OCPP frames
                read_buffer_init_size=4096,
            )
        except WSHandshakeError as exc:
            status = getattr(exc.response, "status", None)
            stats.errors[f"handshake_{int(status) if status is not None else 'error'}"] += 1
            return False
        except (OSError, TimeoutError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            stats.errors[kind] += 1
            return False
        stats.handshake_s.append(perf() - started)
        stats.connected += 1
        return True

    async def start_transactions(self, timeout_s: float) -> int:
        """StartTransaction on connector 1 of every connected station; returns how many."""
        futures = [
            (s, s.setup_call(lambda mid: frames.start_transaction(mid, "BENCH-TAG")))
            for s in self.connected
        ]
        if not futures:
            return 0
        await asyncio.wait([f for _, f in futures], timeout=timeout_s)
        started = 0
        for station, future in futures:
            if not future.done() or future.exception() is not None:
                continue
            msg = future.result()
            if msg[0] == frames.CALLRESULT and isinstance(msg[2].get("transactionId"), int):
                station.transaction_id = msg[2]["transactionId"]
                station.mv_prefix = frames.meter_values_prefix(msg[2]["transactionId"])
                started += 1
        return started

    async def close(self, timeout_s: float = 5.0) -> None:
        self.closing = True
        open_ = [s.transport for s in self.stations if s.transport is not None]
        for station in self.stations:
            station.close()
        if open_:
            waits = [asyncio.ensure_future(t.wait_disconnected()) for t in open_]
            _, pending = await asyncio.wait(waits, timeout=timeout_s)
            for w in pending:
                w.cancel()


def _record_boot(future: asyncio.Future[list[Any]], stats: ConnectStats, at: float) -> None:
    if future.cancelled() or future.exception() is not None:
        stats.errors["boot_no_answer"] += 1
        return
    msg = future.result()
    if msg[0] != frames.CALLRESULT:
        stats.errors[f"boot_callerror_{msg[2]}"] += 1
    elif msg[2].get("status") != "Accepted":
        stats.errors[f"boot_{msg[2].get('status')}"] += 1
    else:
        stats.booted_at.append(at)
        stats.booted += 1


class OpenLoopTelemetry:
    """MeterValues from every station at a fixed rate, on a schedule fixed in advance.

    Send j goes out from station j mod N at `t0 + j / (N · rate)`: one period's
    sends are spread evenly over the stations and the period. A single timer,
    firing every `tick_s`, sends whatever is due; latency is measured from the
    scheduled instant (see `stats` on coordinated omission), the timer's own
    lateness included.
    """

    def __init__(
        self,
        fleet: LoadFleet,
        stations: Sequence[LoadStation],
        rate_hz: float,
        duration_s: float,
        *,
        tick_s: float = 0.001,
        lead_s: float = 0.05,
    ) -> None:
        if not stations:
            raise ValueError("no station is ready to send telemetry")
        self.fleet = fleet
        self.stations = list(stations)
        self.tick_s = tick_s
        total = math.ceil(duration_s * len(stations) * rate_hz)
        interval = 1.0 / (len(stations) * rate_hz)
        self.schedule = OpenLoopSchedule(perf() + lead_s, interval, total)
        self.sent_at = nan_array(total)
        self.acked_at = nan_array(total)
        self.sent = 0
        self.acked = 0
        self.call_errors = 0
        self.next_j = 0
        self.finished: asyncio.Future[None] = fleet.loop.create_future()
        self.drained = asyncio.Event()

    def start(self) -> None:
        self.fleet.reply_handler = self.on_reply
        self.fleet.loop.call_at(self.fleet.loop.time() + self.schedule.t0 - perf(), self._tick)

    def _tick(self) -> None:
        schedule = self.schedule
        now = perf()
        end = min(schedule.total, int((now - schedule.t0) / schedule.interval) + 1)
        if end > self.next_j:
            ts = frames.timestamp()
            stations, n, sent_at = self.stations, len(self.stations), self.sent_at
            meter_values, text = frames.meter_values, _TEXT
            for j in range(self.next_j, end):
                station = stations[j % n]
                transport = station.transport
                if transport is None:
                    continue  # stays NaN: counted as unsent (and lost) in the report
                station.energy_wh += 2
                transport.send(
                    text, meter_values(b"%d" % j, station.mv_prefix, ts, station.energy_wh)
                )
                sent_at[j] = perf()
                self.sent += 1
            self.next_j = end
        if self.next_j >= schedule.total:
            if not self.finished.done():
                self.finished.set_result(None)
            return
        self.fleet.loop.call_later(self.tick_s, self._tick)

    def on_reply(self, station: LoadStation, message_id: str, ok: bool, now: float) -> None:
        try:
            j = int(message_id)
        except ValueError:
            self.fleet.stray_replies += 1
            return
        if ok:
            self.acked_at[j] = now
            self.acked += 1
        else:
            self.call_errors += 1
        if self.next_j >= self.schedule.total and self.acked + self.call_errors >= self.sent:
            self.drained.set()

    async def run(self, drain_s: float) -> None:
        """Send the whole schedule, then wait up to `drain_s` for the last answers."""
        self.start()
        await self.finished
        if self.acked + self.call_errors >= self.sent:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained.wait(), drain_s)


class ClosedLoopTelemetry:
    """Saturation: each station keeps `window` MeterValues in flight, sending the
    next one from the callback that received an answer. Throughput is what the
    server sustains; latency here is service time (closed loops cannot measure
    coordinated omission, they suffer from it) and is reported as such.
    """

    def __init__(
        self,
        fleet: LoadFleet,
        stations: Sequence[LoadStation],
        *,
        window: int,
        warmup_s: float,
        duration_s: float,
    ) -> None:
        if not stations:
            raise ValueError("no station is ready to send telemetry")
        self.fleet = fleet
        self.stations = list(stations)
        self.window = window
        self.warmup_s = warmup_s
        self.duration_s = duration_s
        self.window_start = math.inf
        self.window_end = math.inf
        self.latencies: array[float] = array("d")
        self.acked_in_window = 0
        self.sent = 0
        self.acked = 0
        self.call_errors = 0
        self.running = False
        self._seq = 0
        self._ts = frames.timestamp()
        self._refresh: asyncio.TimerHandle | None = None
        self.drained = asyncio.Event()

    def _send(self, station: LoadStation) -> None:
        transport = station.transport
        if transport is None:
            return
        self._seq += 1
        station.energy_wh += 2
        station.sent_at.append(perf())
        transport.send(
            _TEXT,
            frames.meter_values(b"%d" % self._seq, station.mv_prefix, self._ts, station.energy_wh),
        )
        self.sent += 1

    def on_reply(self, station: LoadStation, message_id: str, ok: bool, now: float) -> None:
        if not station.sent_at:
            self.fleet.stray_replies += 1
            return
        sent = station.sent_at.popleft()
        if ok:
            self.acked += 1
        else:
            self.call_errors += 1
        if self.window_start <= now < self.window_end:
            self.latencies.append(now - sent)
            self.acked_in_window += 1
        if self.running:
            self._send(station)
        elif self.acked + self.call_errors >= self.sent:
            self.drained.set()

    def _refresh_ts(self) -> None:
        # one timestamp per 100 ms is plenty for telemetry and costs nothing per frame
        self._ts = frames.timestamp()
        self._refresh = self.fleet.loop.call_later(0.1, self._refresh_ts)

    async def run(self, drain_s: float, on_window: Callable[[str], None]) -> None:
        """Run warm-up + window; `on_window("start" | "end")` brackets the window."""
        self.fleet.reply_handler = self.on_reply
        self.running = True
        self._refresh_ts()
        for station in self.stations:
            for _ in range(self.window):
                self._send(station)
        await asyncio.sleep(self.warmup_s)
        # The window is bracketed by the instants the server's CPU is sampled, so
        # messages and CPU time are counted over exactly the same interval.
        self.window_start = perf()
        on_window("start")
        await asyncio.sleep(self.duration_s)
        self.window_end = perf()
        on_window("end")
        self.running = False
        if self._refresh is not None:
            self._refresh.cancel()
        if self.acked + self.call_errors >= self.sent:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained.wait(), drain_s)
