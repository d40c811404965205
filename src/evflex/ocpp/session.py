"""One station's OCPP-J session over a picows WebSocket.

Inbound frames are handled synchronously inside `on_ws_frame`: parse, validate,
translate into fleet events, answer. No task per message and no thread hop: this
is the hot path, budgeted at a few tens of microseconds per frame.

Outbound calls (CSMS→station) go through a per-session queue with at most one
CALL in flight, as OCPP-J requires; grid commands take an urgent lane ahead of
routine calls. The queue never blocks inbound handling: a station's own calls
are answered while our call to it is pending.

A single call has its own Future and response timer. The calls of a broadcast
(or of a batch of grid limits) belong to a `CallGroup` instead: one deadline timer
and one Future for the whole fleet, and an answer only records its outcome — no
Future, no timer and no wake-up per station (those were most of a 5,000-station
broadcast's CPU). A streaming group also hands the outcomes on as they settle, in
one batch per event-loop pass.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from evflex.fleet.commands import (
    CommandRejected,
    CommandTimeout,
    InvalidCommand,
    StationNotConnected,
)
from evflex.fleet.events import CommandCompleted, Event
from evflex.fleet.model import Protocol
from evflex.ocpp.errors import (
    FORMAT_VIOLATION,
    INTERNAL_ERROR,
    MESSAGE_TYPE_NOT_SUPPORTED,
    NOT_IMPLEMENTED,
    NOT_SUPPORTED,
    PROTOCOL_ERROR,
    SECURITY_ERROR,
    OcppError,
)
from evflex.ocpp.timefmt import now
from evflex.ocpp.validation import V16, V201, SchemaSet

if TYPE_CHECKING:
    from evflex.ocpp.gateway import Gateway

log = logging.getLogger(__name__)

CALL, CALLRESULT, CALLERROR = 2, 3, 4
Handler = Callable[["Session", dict[str, Any]], dict[str, Any]]
_MAX_MESSAGE_ID_LEN = 36  # OCPP-J: message id is a string of at most 36 characters
_ids = itertools.count(1)
# the member as a module constant: `WSMsgType.TEXT` is an enum class attribute
# lookup of ~70 ns (Python 3.11), paid per frame sent
_TEXT = WSMsgType.TEXT
next_message_number = _ids.__next__  # for frames encoded outside (`Session.send_framed`)


@dataclass(slots=True)
class Outgoing:
    action: str
    # None: only `encoded` exists (a frame spliced from a validated template); it is
    # decoded for the command log, after the answers, not on the way out. Neither:
    # the call went out as a whole frame, and its group re-encodes it for the log.
    payload: dict[str, Any] | None
    future: asyncio.Future[dict[str, Any]] | None  # None: the outcome goes to `group`
    timeout_s: float
    encoded: bytes | None = None  # payload already validated and serialised (broadcasts)
    # its message id is str(number); the string is only made when an answer comes
    # (~50 ns less per station of a fleet-wide pass)
    number: int = 0
    sent_at: float = 0.0
    timer: asyncio.TimerHandle | None = None
    group: CallGroup | None = None
    key: Hashable = ""  # unique within its group: the station id, or an order's index

    def logged_payload(self, session: Session) -> dict[str, Any]:
        """The payload as the command log shows it."""
        if self.payload is not None:
            return self.payload
        encoded = self.encoded
        if encoded is None and self.group is not None and self.group.encode is not None:
            encoded = self.group.encode(session, self.key)
        decoded = orjson.loads(encoded) if encoded is not None else {}
        return decoded if isinstance(decoded, dict) else {}

    @property
    def abandoned(self) -> bool:
        """Settled before it was sent (timed out in the queue) or given up by its caller."""
        if self.group is not None:
            return self.key in self.group.outcomes or self.group.done.cancelled()
        return self.future is None or self.future.done()

    def succeed(self, payload: dict[str, Any]) -> None:
        if self.group is not None:
            self.group.settle(self.key, payload)
        elif self.future is not None and not self.future.done():
            self.future.set_result(payload)

    def fail(self, exc: Exception) -> None:
        if self.group is not None:
            self.group.settle(self.key, exc)
        elif self.future is not None and not self.future.done():  # the caller may have left
            self.future.set_exception(exc)


def group_call(action: str, timeout_s: float, group: CallGroup, key: Hashable) -> Outgoing:
    """`Outgoing(action, None, None, timeout_s, group=group, key=key)`, cheaper: the
    dataclass constructor runs a Python `__init__` through the type call; this sets
    the slots itself. Every field is set: tests/ocpp/test_call_queue.py compares the two.
    """
    item: Outgoing = _new(Outgoing)
    item.action = action
    item.payload = None
    item.future = None
    item.timeout_s = timeout_s
    item.encoded = None
    item.number = 0
    item.sent_at = 0.0
    item.timer = None
    item.group = group
    item.key = key
    return item


_new = object.__new__
Settled = tuple[Hashable, dict[str, Any] | Exception]


class CallGroup:
    """The calls of one broadcast: a shared deadline and one Future for all outcomes.

    `outcomes` maps each call's key to its CALLRESULT payload or its exception
    (CommandRejected, CommandTimeout, StationNotConnected, InvalidCommand). The
    deadline bounds the whole wait, queueing included, like `Gateway.send`: at it,
    `expire` times out every call still unanswered, in flight or still queued.

    `encode` gives the payload of a call that kept neither `payload` nor `encoded`
    (sent as a whole frame), for the command log: encoded again after the answers
    rather than kept per call on the way out.

    With `stream`, outcomes are also handed to it as they settle: everything settled
    since the last hand-over, in one call scheduled with `call_soon` (never from
    inside `add`/`settle`, so the caller is not re-entered mid-pass). `done` then
    resolves only after the last hand-over.
    """

    __slots__ = (
        "_flush_due",
        "completed",
        "done",
        "encode",
        "items",
        "outcomes",
        "remaining",
        "sealed",
        "sessions",
        "settled",
        "stream",
        "timer",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stream: Callable[[list[Settled]], None] | None = None,
        encode: Callable[[Session, Hashable], bytes | None] | None = None,
    ) -> None:
        self.outcomes: dict[Hashable, dict[str, Any] | Exception] = {}
        self.stream = stream
        self.encode = encode
        self.settled: list[Settled] = []  # not yet handed to `stream`
        self._flush_due = False
        self.remaining = 0
        self.sealed = False  # every call added: `done` may resolve
        self.done: asyncio.Future[None] = loop.create_future()
        # the calls added and each one's session: parallel lists, no tuple per call
        self.items: list[Outgoing] = []
        self.sessions: list[Session] = []
        self.timer: asyncio.TimerHandle | None = None
        # (session, call, answered at (perf_counter), outcome, response, error) of the
        # calls sent, for the command log
        self.completed: list[
            tuple[Session, Outgoing, float, str, dict[str, Any] | None, str | None]
        ] = []

    def add(self, session: Session, item: Outgoing) -> None:
        self.items.append(item)
        self.sessions.append(session)
        self.remaining += 1

    def refuse(self, key: Hashable, exc: Exception) -> None:
        """A call that never got a session (station offline, invalid values)."""
        self.remaining += 1
        self.settle(key, exc)

    def seal(self, deadline: float) -> None:
        """No more calls; time out what is still unanswered at loop time `deadline`."""
        self.sealed = True
        if self.remaining:
            self.timer = self.done.get_loop().call_at(deadline, self.expire)
        elif not self._flush_due:  # else the pending hand-over finishes the group
            self._finish()

    def settle(self, key: Hashable, outcome: dict[str, Any] | Exception) -> None:
        if key in self.outcomes:
            return
        self.outcomes[key] = outcome
        self.remaining -= 1
        if self.stream is not None:
            self.settled.append((key, outcome))
            if not self._flush_due:
                self._flush_due = True
                self.done.get_loop().call_soon(self._flush)
            return  # `_flush` finishes the group, after the last hand-over
        if self.remaining == 0 and self.sealed:
            if self.timer is not None:
                self.timer.cancel()
            self._finish()

    def _flush(self) -> None:
        settled, self.settled, self._flush_due = self.settled, [], False
        assert self.stream is not None
        try:
            self.stream(settled)
        except Exception:
            log.exception("outcome consumer failed on %d outcomes", len(settled))
        if self.remaining == 0 and self.sealed and not self._flush_due:
            if self.timer is not None:
                self.timer.cancel()
            self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        # The command log of the fleet's answers is written right after the last
        # one, not interleaved with them: building thousands of events while answers
        # still arrive delayed the last one by ~4 µs per station.
        self.done.get_loop().call_soon(self.log)

    def log(self) -> None:
        """Emit a CommandCompleted per call that was sent (the command log)."""
        completed, self.completed = self.completed, []
        if not completed:
            return
        wall, perf = now(), time.perf_counter()  # one clock reading for all of them
        for session, item, answered, outcome, response, error in completed:
            session.emit(
                CommandCompleted(
                    session.station_id,
                    item.action,
                    item.logged_payload(session),
                    wall - timedelta(seconds=perf - item.sent_at),
                    (answered - item.sent_at) * 1000.0,
                    outcome,
                    response,
                    error,
                )
            )

    def expire(self) -> None:
        for session, item in zip(self.sessions, self.items, strict=True):
            if item.key not in self.outcomes:
                session.expire(item)


class Session(WSListener):
    """The live connection of one station. Holds no fleet state: that is FleetState's."""

    # Slots, not a __dict__: under picows' extension-type base, a dict attribute
    # costs ~20 ns a read (no specialisation in 3.11), ~3 per station of a
    # fleet-wide `send_limits` pass and more per frame received
    __slots__ = (
        "_closed",
        "_fragments",
        "_inflight",
        "_routine",
        "_urgent",
        "booted",
        "gateway",
        "handlers",
        "protocol",
        "protocol_name",
        "schemas",
        "starting",
        "station_id",
        "transport",
        "v16",
    )

    def __init__(
        self,
        gateway: Gateway,
        station_id: str,
        protocol: Protocol,
        handlers: dict[str, Handler],
    ) -> None:
        self.gateway = gateway
        self.station_id = station_id
        self.protocol = protocol
        self.v16 = protocol is Protocol.OCPP16
        self.protocol_name = protocol.value  # str, for counter keys on the hot path
        self.schemas: SchemaSet = V16 if self.v16 else V201
        self.handlers = handlers
        self.transport: WSTransport | None = None
        self.booted = gateway.directory.has_booted(station_id)
        self._inflight: Outgoing | None = None
        self._urgent: deque[Outgoing] | None = None  # created on first use: ~600 B each
        self._routine: deque[Outgoing] | None = None
        self._fragments: list[bytes] | None = None
        self._closed = False
        # its first frames go through the gateway's pacer (see evflex.ocpp.pacing)
        self.starting = gateway.pacer is not None

    # -- picows callbacks ------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.gateway.attach(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.starting and self.gateway.pacer is not None:
            self.gateway.pacer.on_disconnected(self)
        self._closed = True
        self._fail_all(StationNotConnected(f"{self.station_id} disconnected"))
        self.gateway.detach(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        pacer = self.gateway.pacer if self.starting else None
        if pacer is not None and pacer.on_frame(self, frame):
            return  # handled or held by the pacer
        msg_type = frame.msg_type
        if msg_type is WSMsgType.TEXT or msg_type is WSMsgType.BINARY:
            if frame.fin:
                self.on_message(frame.get_payload_as_bytes())
            else:
                self._fragments = [frame.get_payload_as_bytes()]
        elif msg_type is WSMsgType.CONTINUATION and self._fragments is not None:
            self._fragments.append(frame.get_payload_as_bytes())
            if sum(map(len, self._fragments)) > self.gateway.max_message_bytes:
                self._fragments = None
                transport.send_close(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
                transport.disconnect()
            elif frame.fin:
                data, self._fragments = b"".join(self._fragments), None
                self.on_message(data)
        elif msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    # -- inbound ---------------------------------------------------------------
    def on_message(self, raw: bytes) -> None:
        started = time.perf_counter()
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._send_error("-1", OcppError(FORMAT_VIOLATION, "frame is not valid JSON"))
            return
        if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
            msg_id = msg[1] if isinstance(msg, list) and len(msg) > 1 else "-1"
            self._send_error(
                msg_id if isinstance(msg_id, str) else "-1",
                OcppError(PROTOCOL_ERROR, "frame must be [MessageTypeId, MessageId, ...]"),
            )
            return
        kind = msg[0]
        if kind == CALL:
            self._on_call(msg)
        elif kind == CALLRESULT:
            self._on_result(msg)
        elif kind == CALLERROR:
            self._on_call_error(msg)
        else:
            self._send_error(
                msg[1], OcppError(MESSAGE_TYPE_NOT_SUPPORTED, f"MessageTypeId {kind!r} unknown")
            )
        self.gateway.stats.observe_latency(time.perf_counter() - started)

    def _on_call(self, msg: list[Any]) -> None:
        msg_id = msg[1]
        if len(msg) != 4 or not isinstance(msg[2], str) or not isinstance(msg[3], dict):
            self._send_error(msg_id, OcppError(PROTOCOL_ERROR, "CALL must be [2, id, action, {}]"))
            return
        action, payload = msg[2], msg[3]
        self.gateway.stats.messages[(self.protocol_name, action, "in")] += 1
        try:
            if len(msg_id) > _MAX_MESSAGE_ID_LEN:
                raise OcppError(PROTOCOL_ERROR, "MessageId longer than 36 characters")
            handler = self.handlers.get(action)
            if handler is None:
                code = NOT_SUPPORTED if action in self.schemas.actions else NOT_IMPLEMENTED
                raise OcppError(code, f"action {action!r} not handled by this CSMS")
            if not self.booted and action != "BootNotification":
                # B02.FR.09 (2.0.1), 1.6 §4.2: nothing but BootNotification before the
                # station has been accepted. A reconnect of a booted station is fine.
                raise OcppError(SECURITY_ERROR, f"{action} before BootNotification")
            self.schemas.validate_request(action, payload)
            response = handler(self, payload)
        except OcppError as exc:
            self._send_error(msg_id, exc)
            return
        except Exception:
            log.exception("handler for %s from %s failed", action, self.station_id)
            self._send_error(msg_id, OcppError(INTERNAL_ERROR, f"{action} could not be processed"))
            return
        try:
            # our own answers are checked too: a bug here must not reach a station
            self.schemas.validate_response(action, response)
        except OcppError as exc:
            log.error("%s: invalid %s response %r: %s", self.station_id, action, response, exc)
            self._send_error(msg_id, OcppError(INTERNAL_ERROR, f"{action}: invalid response"))
            return
        self._send(orjson.dumps([CALLRESULT, msg_id, response]))

    def _on_result(self, msg: list[Any]) -> None:
        item = self._take_inflight(msg[1])
        if item is None:
            return
        payload = msg[2]
        try:
            if not isinstance(payload, dict):
                raise OcppError(FORMAT_VIOLATION, "CALLRESULT payload must be an object")
            self.schemas.validate_response(item.action, payload)
        except OcppError as exc:
            # The station answered with an invalid payload: the caller learns why.
            self._complete(item, "error", error=f"{exc.code}: {exc.description}")
            item.fail(CommandRejected(exc.code, exc.description, exc.details))
        else:
            self._complete(item, "result", response=payload)
            item.succeed(payload)
        self._send_next()

    def _on_call_error(self, msg: list[Any]) -> None:
        item = self._take_inflight(msg[1])
        if item is None:
            return
        code = str(msg[2]) if len(msg) > 2 else "GenericError"
        description = str(msg[3]) if len(msg) > 3 else ""
        details = msg[4] if len(msg) > 4 and isinstance(msg[4], dict) else {}
        self.gateway.stats.call_errors[("received", code)] += 1
        self._complete(item, "error", error=f"{code}: {description}")
        item.fail(CommandRejected(code, description, details))
        self._send_next()

    def _take_inflight(self, msg_id: Any) -> Outgoing | None:
        item = self._inflight
        if item is None or str(item.number) != msg_id:
            # A late answer to a call that already timed out, or a stray frame. Neither
            # can be answered with a CALLERROR (OCPP-J: errors answer CALLs only).
            self.gateway.stats.unmatched_responses += 1
            log.info("%s: response for unknown message id %r ignored", self.station_id, msg_id)
            return None
        self._inflight = None
        if item.timer is not None:
            item.timer.cancel()
        self.gateway.stats.messages[(self.protocol_name, item.action, "result")] += 1
        return item

    # -- outbound --------------------------------------------------------------
    def call(
        self,
        action: str,
        payload: dict[str, Any],
        *,
        priority: bool = False,
        timeout_s: float | None = None,
        encoded: bytes | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        """Queue a CALL; the future resolves with the CALLRESULT payload.

        `encoded`: the payload, already validated against the schema and serialised,
        when the same payload goes to many stations (validated once, not N times).

        Raises (through the future) CommandRejected, CommandTimeout or
        StationNotConnected.
        """
        future: asyncio.Future[dict[str, Any]] = self.gateway.loop.create_future()
        item = Outgoing(action, payload, future, timeout_s or self.gateway.call_timeout_s, encoded)
        self.enqueue(item, priority)
        return future

    def enqueue(self, item: Outgoing, priority: bool = False) -> None:
        """Queue a prepared call (its outcome goes to its future or its group)."""
        if self._closed:
            item.fail(StationNotConnected(f"{self.station_id} is not connected"))
            return
        if self._inflight is None and not self._urgent and not self._routine:
            # idle (the common case, and every station of a broadcast): send at once,
            # no queue to create and pop
            self._start(item)
            return
        if priority:
            if self._urgent is None:
                self._urgent = deque()
            self._urgent.append(item)
        else:
            if self._routine is None:
                self._routine = deque()
            self._routine.append(item)
        if self._inflight is None:
            self._send_next()

    def send_framed(self, item: Outgoing, number: int, frame: bytes) -> bool:
        """Send a group's call now as `frame`, already encoded with message id `number`,
        if this session is idle; False, and nothing done, if it is not.

        The per-station step of `Gateway.send_limits`: for an idle session it does
        what `enqueue` → `_start` → `_encode_call` do, inline (those calls were a
        third of the pass's ~3.5 µs per station). A busy session's call is queued
        by the caller instead, with `encoded`. The caller also counts the frames
        sent in `stats.messages`, once per pass.
        """
        if (
            self._inflight is not None
            or self._urgent
            or self._routine
            or self._closed
            or self.transport is None
        ):
            return False
        item.number = number
        item.sent_at = time.perf_counter()
        self._inflight = item  # a group's call: its deadline is the group's timer
        self.transport.send(_TEXT, frame)
        return True

    @property
    def queued(self) -> int:
        # abandoned (cancelled) calls stay in the deque until popped; they do not count
        waiting = [*(self._urgent or ()), *(self._routine or ())]
        return sum(1 for item in waiting if not item.abandoned) + (self._inflight is not None)

    def _send_next(self) -> None:
        while self._inflight is None and not self._closed:
            item = self._pop()
            if item is None:
                return
            if item.abandoned:  # cancelled by its caller or timed out while queued
                continue
            self._start(item)

    def _start(self, item: Outgoing) -> None:
        """Send `item` now (nothing is in flight)."""
        frame = self._encode_call(item)
        if frame is None:
            return
        item.sent_at = time.perf_counter()
        if item.group is None:  # a group's calls share its deadline timer
            item.timer = self.gateway.loop.call_later(item.timeout_s, self._on_timeout, item)
        self._inflight = item
        self.gateway.stats.messages[(self.protocol_name, item.action, "out")] += 1
        self._send(frame)

    def _encode_call(self, item: Outgoing) -> bytes | None:
        number = next(_ids)
        item.number = number
        if item.encoded is not None:
            return b'[2,"%d","%b",%b]' % (number, item.action.encode(), item.encoded)
        assert item.payload is not None  # an item without `encoded` carries its payload
        try:
            self.schemas.validate_request(item.action, item.payload)
        except OcppError as exc:
            item.fail(InvalidCommand(f"{exc.code}: {exc.description}"))
            return None
        return orjson.dumps([CALL, str(number), item.action, item.payload])

    def _pop(self) -> Outgoing | None:
        if self._urgent:
            return self._urgent.popleft()
        if self._routine:
            return self._routine.popleft()
        return None

    def _on_timeout(self, item: Outgoing) -> None:
        if self._inflight is not item:
            return
        self._inflight = None
        self.gateway.stats.command_timeouts += 1
        self._complete(item, "timeout", error=f"no response within {item.timeout_s:g} s")
        item.fail(
            CommandTimeout(f"{self.station_id}: {item.action} timed out after {item.timeout_s:g} s")
        )
        self._send_next()

    def expire(self, item: Outgoing) -> None:
        """Its group's deadline passed: time the call out, in flight or still queued."""
        if self._inflight is item:
            self._on_timeout(item)
        else:  # still queued: it is skipped when its turn comes
            item.fail(
                CommandTimeout(
                    f"{self.station_id}: {item.action} not sent within {item.timeout_s:g} s"
                    " (queued behind other calls)"
                )
            )

    def _complete(
        self,
        item: Outgoing,
        outcome: str,
        *,
        response: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        answered = time.perf_counter()
        if item.group is not None:
            # logged when the whole broadcast is in (CallGroup.log), not on its way
            item.group.completed.append((self, item, answered, outcome, response, error))
            return
        duration_ms = (answered - item.sent_at) * 1000.0
        sent_at = now() - timedelta(milliseconds=duration_ms)
        self.emit(
            CommandCompleted(
                self.station_id,
                item.action,
                item.logged_payload(self),
                sent_at,
                duration_ms,
                outcome,
                response,
                error,
            )
        )

    def _fail_all(self, exc: Exception) -> None:
        if self._inflight is not None:
            self._complete(self._inflight, "not_connected", error=str(exc))
        pending = [self._inflight] if self._inflight is not None else []
        pending += list(self._urgent or ()) + list(self._routine or ())
        self._inflight = self._urgent = self._routine = None
        for item in pending:
            if item.timer is not None:
                item.timer.cancel()
            item.fail(exc)

    # -- helpers ---------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self.gateway.sink(event)

    def close(self, reason: str) -> None:
        """Close the connection (used when a new connection replaces this one)."""
        if self.transport is not None and not self._closed:
            self.transport.send_close(WSCloseCode.OK, reason.encode())
            self.transport.disconnect()

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.send(_TEXT, data)

    def _send_error(self, msg_id: str, exc: OcppError) -> None:
        code = exc.code_for(self.v16)
        self.gateway.stats.call_errors[("sent", code)] += 1
        log.info(
            "%s: CALLERROR %s to message %s: %s", self.station_id, code, msg_id, exc.description
        )
        self._send(orjson.dumps([CALLERROR, msg_id, code, exc.description, exc.details]))
