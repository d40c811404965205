"""One station's OCPP-J session over a picows WebSocket.

Inbound frames are handled synchronously inside `on_ws_frame`: parse, validate,
translate into fleet events, answer. No task per message and no thread hop: this
is the hot path, budgeted at a few tens of microseconds per frame.

Outbound calls (CSMS→station) go through a per-session queue with at most one
CALL in flight, as OCPP-J requires; grid commands take an urgent lane ahead of
routine calls. The queue never blocks inbound handling: a station's own calls
are answered while our call to it is pending.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
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


@dataclass(slots=True)
class Outgoing:
    action: str
    payload: dict[str, Any]
    future: asyncio.Future[dict[str, Any]]
    timeout_s: float
    encoded: bytes | None = None  # payload already validated and serialised (broadcasts)
    message_id: str = ""
    sent_at: float = 0.0
    timer: asyncio.TimerHandle | None = None


class Session(WSListener):
    """The live connection of one station. Holds no fleet state: that is FleetState's."""

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

    # -- picows callbacks ------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.gateway.attach(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closed = True
        self._fail_all(StationNotConnected(f"{self.station_id} disconnected"))
        self.gateway.detach(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
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
            if not item.future.done():  # the caller may have given up (cancelled)
                item.future.set_exception(CommandRejected(exc.code, exc.description, exc.details))
        else:
            self._complete(item, "result", response=payload)
            if not item.future.done():
                item.future.set_result(payload)
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
        if not item.future.done():
            item.future.set_exception(CommandRejected(code, description, details))
        self._send_next()

    def _take_inflight(self, msg_id: Any) -> Outgoing | None:
        item = self._inflight
        if item is None or item.message_id != msg_id:
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
        if self._closed:
            future.set_exception(StationNotConnected(f"{self.station_id} is not connected"))
            return future
        item = Outgoing(action, payload, future, timeout_s or self.gateway.call_timeout_s, encoded)
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
        return future

    @property
    def queued(self) -> int:
        # abandoned (cancelled) calls stay in the deque until popped; they do not count
        waiting = [*(self._urgent or ()), *(self._routine or ())]
        return sum(1 for item in waiting if not item.future.done()) + (self._inflight is not None)

    def _send_next(self) -> None:
        while self._inflight is None and not self._closed:
            item = self._pop()
            if item is None:
                return
            if item.future.done():  # cancelled by its caller while queued
                continue
            frame = self._encode_call(item)
            if frame is None:
                continue
            item.sent_at = time.perf_counter()
            item.timer = self.gateway.loop.call_later(item.timeout_s, self._on_timeout, item)
            self._inflight = item
            self.gateway.stats.messages[(self.protocol_name, item.action, "out")] += 1
            self._send(frame)

    def _encode_call(self, item: Outgoing) -> bytes | None:
        item.message_id = str(next(_ids))
        if item.encoded is not None:
            return b'[2,"%s","%s",%s]' % (
                item.message_id.encode(),
                item.action.encode(),
                item.encoded,
            )
        try:
            self.schemas.validate_request(item.action, item.payload)
        except OcppError as exc:
            item.future.set_exception(InvalidCommand(f"{exc.code}: {exc.description}"))
            return None
        return orjson.dumps([CALL, item.message_id, item.action, item.payload])

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
        if not item.future.done():
            item.future.set_exception(
                CommandTimeout(
                    f"{self.station_id}: {item.action} timed out after {item.timeout_s:g} s"
                )
            )
        self._send_next()

    def _complete(
        self,
        item: Outgoing,
        outcome: str,
        *,
        response: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        duration_ms = (time.perf_counter() - item.sent_at) * 1000.0
        sent_at = now() - timedelta(milliseconds=duration_ms)
        self.emit(
            CommandCompleted(
                self.station_id,
                item.action,
                item.payload,
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
            if not item.future.done():
                item.future.set_exception(exc)

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
            self.transport.send(WSMsgType.TEXT, data)

    def _send_error(self, msg_id: str, exc: OcppError) -> None:
        code = exc.code_for(self.v16)
        self.gateway.stats.call_errors[("sent", code)] += 1
        log.info(
            "%s: CALLERROR %s to message %s: %s", self.station_id, code, msg_id, exc.description
        )
        self._send(orjson.dumps([CALLERROR, msg_id, code, exc.description, exc.details]))
