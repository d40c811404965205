"""The OCPP-J client side of a simulated station: one WebSocket, one CALL in flight.

Connection life cycle (connect, back-off, reconnect), inbound dispatch of CSMS
calls to per-version handlers, the outbound call queue with offline queueing of
transaction messages, BootNotification and Heartbeat, and the faulty-charger
behaviours on the smart-charging calls. What a station *does* is in
evflex.sim.station; this module only speaks the protocol.

The link is its own picows listener, reused across reconnects; it has no timer:
the fleet's shared tick drives it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from evflex.sim import framing
from evflex.sim.clock import Clock
from evflex.sim.faults import DelayModel, Fault
from evflex.sim.framing import CallError
from evflex.sim.stats import Stats

Payload = dict[str, Any]
OnResult = Callable[[Payload], None]
Handler = Callable[[Any, Payload], Payload]
BOOT_RETRY_S = 30.0  # when the CSMS gives no interval, or does not answer at all
_LINK_EVENTS = frozenset({"connected", "disconnected", "booted"})
_SMART_CHARGING = frozenset({"SetChargingProfile", "ClearChargingProfile"})


@dataclass(frozen=True, slots=True)
class SimEvent:
    """Something an observer may want to see: kind and details."""

    station_id: str
    kind: str  # connected | disconnected | booted | call | applied | tx_started | tx_ended
    detail: dict[str, Any]


@dataclass(slots=True)
class Context:
    """What every station shares with its fleet."""

    loop: asyncio.AbstractEventLoop
    clock: Clock
    stats: Stats
    delays: DelayModel
    reconnect: Callable[[Link, float], None]
    observer: Callable[[SimEvent], None] | None = None
    changed: Callable[[], None] | None = None  # connected, disconnected or booted
    meter_interval_s: int = 60
    delta_w: int = 0
    slow_result_s: tuple[float, float] = (10.0, 45.0)
    call_timeout_s: float = 30.0
    queue_limit: int = 2000
    stopping: bool = False


class Outgoing:
    """A station-initiated CALL waiting to be sent or answered."""

    __slots__ = ("action", "attempts", "message_id", "on_result", "payload", "tx")

    def __init__(
        self,
        action: str,
        payload: Payload | bytes | Callable[[], Payload | bytes | None],
        on_result: OnResult | None,
        tx: bool,
    ) -> None:
        self.action = action
        self.payload = payload
        self.on_result = on_result
        self.tx = tx
        self.message_id = ""
        self.attempts = 0


class Link(WSListener):
    """One station's OCPP-J connection; `HANDLERS` maps CSMS actions to answers."""

    HANDLERS: ClassVar[dict[str, Handler]] = {}
    __slots__ = (
        "_backoff",
        "_followups",
        "_inflight",
        "_inflight_deadline",
        "_msg_seq",
        "_queue",
        "auth_header",
        "boot",
        "boot_retry_at",
        "ctx",
        "fault",
        "heartbeat_s",
        "messages_received",
        "messages_sent",
        "next_heartbeat",
        "rng",
        "station_id",
        "transport",
    )

    def __init__(
        self,
        station_id: str,
        ctx: Context,
        rng: random.Random,
        auth_header: str | None,
        fault: Fault,
    ) -> None:
        self.station_id = station_id
        self.ctx = ctx
        self.rng = rng
        self.auth_header = auth_header
        self.fault = fault
        self.transport: WSTransport | None = None
        self.boot = "none"  # none | pending | accepted | rejected
        self.boot_retry_at = 0.0
        self.heartbeat_s = 300.0
        self.next_heartbeat = 0.0
        self._msg_seq = 0
        self._inflight: Outgoing | None = None
        self._inflight_deadline = 0.0
        self._queue: deque[Outgoing] = deque()
        self._followups: list[Callable[[], None]] = []
        self._backoff = 0
        self.messages_sent = 0
        self.messages_received = 0

    # -- observation -------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.transport is not None

    def emit(self, kind: str, **detail: Any) -> None:
        if kind in _LINK_EVENTS and self.ctx.changed is not None:
            self.ctx.changed()
        if self.ctx.observer is not None:
            self.ctx.observer(SimEvent(self.station_id, kind, detail))

    # -- picows callbacks --------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._backoff = 0
        self.ctx.stats.connects += 1
        self.emit("connected")
        if self.boot == "accepted":
            self.on_reconnected()
            self._send_next()
        else:
            self.send_boot()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.transport is not transport:
            return
        self.transport = None
        self.ctx.stats.disconnects += 1
        item, self._inflight = self._inflight, None
        if item is not None and item.tx:
            self._queue.appendleft(item)  # resent after reconnecting
        self._queue = deque(i for i in self._queue if i.tx)
        self.emit("disconnected")
        if not self.ctx.stopping:
            self.ctx.reconnect(self, self.backoff_delay())

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.TEXT:
            self.on_message(frame.get_payload_as_bytes())
        elif msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def backoff_delay(self) -> float:
        """Exponential back-off with jitter (2.0.1 RetryBackOff*): 1, 2, 4 ... 60 s."""
        delay = min(60.0, 2.0**self._backoff)
        self._backoff += 1
        return delay * self.rng.uniform(0.5, 1.5)

    def disconnect(self) -> None:
        if self.transport is not None:
            self.transport.send_close(WSCloseCode.GOING_AWAY)
            self.transport.disconnect()

    # -- inbound -----------------------------------------------------------------------
    def on_message(self, raw: bytes) -> None:
        self.messages_received += 1
        self.ctx.stats.received += 1
        try:
            msg = orjson.loads(raw)
            kind = msg[0]
            if kind == framing.CALLRESULT:
                self._on_result(msg[1], msg[2])
            elif kind == framing.CALL:
                self._on_call(msg[1], msg[2], msg[3])
            elif kind == framing.CALLERROR:
                self._on_error(msg[1])
        except (orjson.JSONDecodeError, IndexError, TypeError, KeyError):
            self._send_raw(framing.error("-1", framing.PROTOCOL_ERROR, "malformed frame"))

    def _on_result(self, message_id: str, payload: Payload) -> None:
        item = self._inflight
        if item is None or item.message_id != message_id:
            return  # a late answer to a call that timed out
        self._inflight = None
        if item.on_result is not None:
            item.on_result(payload)
        self._send_next()

    def _on_error(self, message_id: str) -> None:
        item = self._inflight
        if item is None or item.message_id != message_id:
            return
        self.ctx.stats.call_errors += 1
        self._inflight = None
        self._send_next()

    def _on_call(self, message_id: str, action: str, payload: Payload) -> None:
        self.ctx.stats.calls_by_action[action] += 1
        self.emit("call", action=action, payload=payload)
        faulty = action in _SMART_CHARGING and self.fault is not Fault.NONE
        if faulty and self._faulty_call(message_id, action):
            return
        frame = self._answer(message_id, action, payload)
        if self.fault is Fault.SLOW and action in _SMART_CHARGING:
            low, high = self.ctx.slow_result_s
            delay = self.rng.uniform(low, high)
            self.ctx.loop.call_later(delay, self._send_late, self.transport, frame)
        else:
            self._send_raw(frame)
        self._run_followups()

    def _answer(self, message_id: str, action: str, payload: Payload) -> bytes:
        handler = self.HANDLERS.get(action)
        if handler is None:
            return framing.error(message_id, framing.NOT_IMPLEMENTED, f"{action} not implemented")
        try:
            return framing.result(message_id, handler(self, payload))
        except CallError as exc:
            self._followups.clear()
            return framing.error(message_id, exc.code, exc.description)
        except (KeyError, ValueError, TypeError) as exc:
            self._followups.clear()
            return framing.error(message_id, framing.PROPERTY_CONSTRAINT, f"{action}: {exc}")

    def _faulty_call(self, message_id: str, action: str) -> bool:
        """Faults that replace the normal answer; True if the call was consumed."""
        if self.fault is Fault.DROP:
            self.disconnect()
            return True
        if self.fault is Fault.REJECT and action == "SetChargingProfile":
            self._send_raw(framing.result(message_id, {"status": "Rejected"}))
            return True
        return False

    def after_reply(self, action: Callable[[], None]) -> None:
        """Run `action` once the CALLRESULT for the current CALL has been sent."""
        self._followups.append(action)

    def _run_followups(self) -> None:
        while self._followups:
            self._followups.pop(0)()

    # -- outbound ----------------------------------------------------------------------
    def call(
        self,
        action: str,
        payload: Payload | bytes | Callable[[], Payload | bytes | None],
        on_result: OnResult | None = None,
        *,
        tx: bool = False,
    ) -> None:
        """Send a CALL when OCPP-J allows (one in flight); queue transaction messages
        while offline, drop others (1.6 §4.x / 2.0.1 E04: only transaction messages
        are kept for later delivery)."""
        if self.transport is None or self.boot != "accepted":
            if tx:
                self._enqueue(Outgoing(action, payload, on_result, tx))
            return
        item = Outgoing(action, payload, on_result, tx)
        if self._inflight is None and not self._queue:
            self._transmit(item)
        else:
            self._enqueue(item)

    def _enqueue(self, item: Outgoing) -> None:
        """Queue behind the CALL in flight; a full queue drops (counted), never grows."""
        if len(self._queue) < self.ctx.queue_limit:
            self._queue.append(item)
        else:
            self.ctx.stats.queue_drops += 1

    def _send_next(self) -> None:
        while self._inflight is None and self._queue and self.transport is not None:
            if self.boot != "accepted":
                return
            self._transmit(self._queue.popleft())

    def _transmit(self, item: Outgoing) -> None:
        payload = item.payload
        if callable(payload):
            built = payload()
            if built is None:  # nothing to say any more (e.g. a transaction never started)
                return
            payload = built
        self._msg_seq += 1
        item.message_id = str(self._msg_seq)
        item.attempts += 1
        self._inflight = item
        self._inflight_deadline = self.ctx.loop.time() + self.ctx.call_timeout_s
        self.ctx.stats.sent_by_action[item.action] += 1
        self._send_raw(framing.call(item.message_id, item.action, payload))

    def _send_late(self, transport: WSTransport | None, frame: bytes) -> None:
        """A late answer goes out only on the connection its call came in on."""
        if transport is not None and transport is self.transport:
            self._send_raw(frame)

    def _send_raw(self, frame: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.send(WSMsgType.TEXT, frame)
            self.messages_sent += 1
            self.ctx.stats.sent += 1

    def _check_timeout(self, now: float, mono: float) -> None:
        """An unanswered CALL: retry transaction messages (1.6 TransactionMessageAttempts),
        retry an unanswered boot later, drop the rest."""
        item = self._inflight
        if item is None or mono < self._inflight_deadline:
            return
        self.ctx.stats.call_timeouts += 1
        self._inflight = None
        if item.action == "BootNotification":
            self.boot_retry_at = now + BOOT_RETRY_S
        elif item.tx and item.attempts < 3:
            self._queue.appendleft(item)
        self._send_next()

    # -- boot and heartbeat --------------------------------------------------------------
    def send_boot(self) -> None:
        if self.transport is None:
            return
        item = Outgoing("BootNotification", self.boot_payload(), self._on_boot, False)
        self._inflight = None
        self._transmit(item)

    def _on_boot(self, response: Payload) -> None:
        status = response.get("status")
        interval = float(response.get("interval") or 0)
        now = time.time()
        if status == "Accepted":
            self.boot = "accepted"
            self.heartbeat_s = interval if interval > 0 else self.heartbeat_s
            self.next_heartbeat = now + self.heartbeat_s
            self.emit("booted")
            self.on_booted(now)
            self._send_next()
        else:
            # Pending / Rejected: retry after the interval (1.6 §4.2, 2.0.1 B02/B03)
            self.boot = "pending" if status == "Pending" else "rejected"
            self.boot_retry_at = now + (interval if interval > 0 else BOOT_RETRY_S)

    def send_heartbeat(self, now: float) -> None:
        self.next_heartbeat = now + self.heartbeat_s
        self.call("Heartbeat", {})

    def link_tick(self, now: float, mono: float) -> None:
        """The protocol's share of the shared tick: boot retry, heartbeat, call timeout."""
        if self._inflight is not None and self.transport is not None:
            self._check_timeout(now, mono)
        if self.boot != "accepted":
            if self.boot_retry_at and now >= self.boot_retry_at:
                self.boot_retry_at = 0.0
                self.send_boot()
        elif self.transport is not None and now >= self.next_heartbeat:
            self.send_heartbeat(now)

    # -- hooks ---------------------------------------------------------------------------
    def boot_payload(self) -> Payload:
        raise NotImplementedError

    def on_booted(self, now: float) -> None:
        """BootNotification accepted."""

    def on_reconnected(self) -> None:
        """Connected again after a loss, already booted."""
