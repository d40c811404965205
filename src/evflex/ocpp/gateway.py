"""The OCPP gateway: accepts station connections and routes commands to them.

`Gateway` implements the fleet's `CommandPort` for the stations connected to this
process. The handshake (path, subprotocol, Basic auth) runs synchronously inside
picows' listener factory, so it must be cheap: credentials are checked against an
in-memory directory with a fast hash (see evflex.fleet.credentials).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gc
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import orjson
from picows import (
    WSListener,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from evflex.fleet.commands import (
    Command,
    CommandError,
    CommandResult,
    CommandTimeout,
    InvalidCommand,
    LimitBatch,
    LimitOrder,
    LimitOutcome,
    StationNotConnected,
)
from evflex.fleet.events import EventSink, StationConnected, StationDisconnected
from evflex.fleet.model import Protocol as OcppVersion
from evflex.ocpp import commands_v16, commands_v201, limits, v16, v201
from evflex.ocpp.pacing import Pacer
from evflex.ocpp.session import (
    CallGroup,
    Outgoing,
    Session,
    Settled,
    group_call,
    next_message_number,
)
from evflex.ocpp.stats import GatewayStats
from evflex.ocpp.timefmt import now

log = logging.getLogger(__name__)

# OCPP 2.0.1 identity: up to 48 characters, printable, no ':' (it separates Basic auth).
_STATION_ID = re.compile(r"^[A-Za-z0-9*\-_=+|@.]{1,48}$")
_PREFERENCE = (OcppVersion.OCPP201, OcppVersion.OCPP16)  # highest version first
_ACCEPTS_PER_PASS = 15  # see Gateway.start
_LISTEN_BACKLOG = 4096


class Directory(Protocol):
    """What the gateway needs to know about stations, supplied by the composition root."""

    def credential(self, station_id: str) -> str | None:
        """The stored password hash, "" for a known station without one, None if unknown."""

    def verify(self, station_id: str, password: str) -> bool: ...

    def register_unknown(self, station_id: str, password: str | None) -> None: ...

    def has_booted(self, station_id: str) -> bool: ...

    def authorize(self, station_id: str, id_token: str) -> str:
        """Authorization status for an id token: "Accepted", "Invalid", "Blocked", ..."""

    def allocate_transaction_id(self) -> int: ...


class Gateway:
    """Live sessions by station id, the handshake, and the command port."""

    def __init__(
        self,
        directory: Directory,
        sink: EventSink,
        *,
        allow_unknown_stations: bool = False,
        heartbeat_interval_s: int = 300,
        call_timeout_s: float = 30.0,
        max_message_bytes: int = 256 * 1024,
        require_auth: bool = True,
    ) -> None:
        self.directory = directory
        self.sink = sink
        self.allow_unknown_stations = allow_unknown_stations
        self.heartbeat_interval_s = heartbeat_interval_s
        self.call_timeout_s = call_timeout_s
        self.max_message_bytes = max_message_bytes
        self.require_auth = require_auth
        self.stats = GatewayStats()
        self.sessions: dict[str, Session] = {}
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pacer: Pacer | None = None  # set by start(): needs the loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # -- server ------------------------------------------------------------------
    async def start(self, host: str, port: int) -> int:
        """Listen for stations; returns the bound port (useful with port 0)."""
        self._loop = asyncio.get_running_loop()
        self.pacer = Pacer(self._loop)
        v16.SCHEMAS.warm(set(v16.HANDLERS) | commands_v16.ACTIONS)
        v201.SCHEMAS.warm(set(v201.HANDLERS) | commands_v201.ACTIONS)
        self._server = await ws_create_server(
            self._on_upgrade,
            host,
            port,
            max_frame_size=self.max_message_bytes,
            # picows' default 16 KiB read buffer per connection is most of its memory;
            # OCPP frames are small and the buffer grows on demand.
            read_buffer_init_size=1024,
            websocket_handshake_timeout=10,
            enable_auto_ping=True,
            auto_ping_idle_timeout=60,
            auto_ping_reply_timeout=30,
            # The accept handler takes at most `backlog` + 1 connections per loop pass
            # (aiofastnet, like asyncio); each costs ~0.1 ms to accept, upgrade and
            # attach, and a connect storm brought up to 368 in one pass (measured).
            backlog=_ACCEPTS_PER_PASS,
        )
        for listener in self._server.sockets:
            with socket.socket(fileno=os.dup(listener.fileno())) as dup:
                # ...while the kernel keeps a long queue of the others: re-listening
                # only changes the queue length (Linux), not the handler's batch.
                dup.listen(_LISTEN_BACKLOG)
                if hasattr(socket, "TCP_DEFER_ACCEPT"):
                    # A connection is accepted once its upgrade request is in, so the
                    # requests handled in a pass are those accepted in it: a client slow
                    # to send them (a loaded simulator) sent 355 at once otherwise.
                    dup.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 10)
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            session.close("server shutting down")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _on_upgrade(self, request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener:
        station_id, refusal = self._admit(request)
        if refusal is not None:
            return refusal
        assert station_id is not None
        protocol = _negotiate(request.headers.get("Sec-WebSocket-Protocol", ""))
        if protocol is None:
            return self._refuse(
                400, "unsupported_subprotocol", station_id, "offer subprotocol ocpp2.0.1 or ocpp1.6"
            )
        handlers = v16.HANDLERS if protocol is OcppVersion.OCPP16 else v201.HANDLERS
        session = Session(self, station_id, protocol, handlers)
        response = WSUpgradeResponse.create_101_response(
            extra_headers={"Sec-WebSocket-Protocol": protocol.value}
        )
        return WSUpgradeResponseWithListener(response, session)

    def _admit(
        self,
        request: WSUpgradeRequest,
    ) -> tuple[str | None, WSUpgradeResponseWithListener | None]:
        path = request.path.decode("latin-1").split("?", 1)[0]
        if not path.startswith("/ocpp/"):
            return None, self._refuse(404, "bad_path", path, "connect to /ocpp/{station_id}")
        station_id = unquote(path[len("/ocpp/") :])
        if not _STATION_ID.match(station_id):
            return None, self._refuse(400, "bad_station_id", station_id, "invalid station id")
        password = _basic_password(request.headers.get("Authorization"), station_id)
        known = self.directory.credential(station_id)
        if known is None:
            if not self.allow_unknown_stations:
                return None, self._refuse(401, "unknown_station", station_id, "unknown station")
            log.warning(
                "REGISTERING UNKNOWN STATION %s on first connect "
                "(--allow-unknown-stations is a development switch)",
                station_id,
            )
            self.directory.register_unknown(station_id, password)
        elif (
            self.require_auth
            and known
            and (password is None or not self.directory.verify(station_id, password))
        ):
            return None, self._refuse(
                401, "bad_credentials", station_id, "wrong or missing credentials"
            )
        return station_id, None

    def _refuse(
        self,
        status: int,
        reason: str,
        station_id: str,
        text: str,
    ) -> WSUpgradeResponseWithListener:
        self.stats.handshake_rejections[reason] += 1
        log.warning("handshake refused for %r: %s (HTTP %d)", station_id, reason, status)
        headers = {"WWW-Authenticate": 'Basic realm="evflex"'} if status == 401 else None
        response = WSUpgradeResponse.create_error_response(
            status, text.encode(), extra_headers=headers
        )
        return WSUpgradeResponseWithListener(response, None)

    # -- session registry --------------------------------------------------------
    def attach(self, session: Session) -> None:
        previous = self.sessions.get(session.station_id)
        self.sessions[session.station_id] = session
        if previous is not None and previous is not session:
            # A station that reconnects (e.g. after a network blip we have not noticed
            # yet) replaces its old socket; the old one is closed, state is kept.
            log.info("%s: new connection replaces the previous one", session.station_id)
            previous.close("replaced by a new connection")
        self.sink(StationConnected(session.station_id, session.protocol, now()))

    def detach(self, session: Session) -> None:
        if self.sessions.get(session.station_id) is session:
            del self.sessions[session.station_id]
            self.sink(StationDisconnected(session.station_id, now()))

    def is_connected(self, station_id: str) -> bool:
        return station_id in self.sessions

    def protocol_counts(self) -> dict[str, int]:
        counts = {p.value: 0 for p in OcppVersion}
        for session in self.sessions.values():
            counts[session.protocol.value] += 1
        return counts

    # -- command port ------------------------------------------------------------
    async def send(
        self,
        station_id: str,
        command: Command,
        *,
        priority: bool = False,
        timeout_s: float | None = None,
    ) -> CommandResult:
        session = self.sessions.get(station_id)
        if session is None:
            raise StationNotConnected(f"station {station_id} is not connected")
        adapter = commands_v16 if session.v16 else commands_v201
        started = time.perf_counter()
        steps = adapter.plan(command)
        responses: list[dict[str, Any]] = []
        # The timeout bounds the whole wait, queueing behind other calls included:
        # the per-call timer alone starts only when the frame is sent.
        deadline = self.loop.time() + (timeout_s or self.call_timeout_s)
        for action, payload in steps:
            future = session.call(action, payload, priority=priority, timeout_s=timeout_s)
            try:
                responses.append(
                    await asyncio.wait_for(future, max(0.0, deadline - self.loop.time()))
                )
            except TimeoutError:
                raise CommandTimeout(
                    f"{station_id}: {action} not answered within "
                    f"{timeout_s or self.call_timeout_s:g} s (queue included)"
                ) from None
        result = adapter.interpret(command, responses)
        return CommandResult(
            result.status, result.response, (time.perf_counter() - started) * 1000.0
        )

    async def broadcast(
        self,
        station_ids: list[str],
        command: Command,
        *,
        priority: bool = False,
        timeout_s: float | None = None,
    ) -> dict[str, CommandResult | CommandError]:
        """Send one command to many stations at once.

        Each station's frame is prepared and written in one pass over the fleet,
        before any answer is awaited, so no station waits for another's preparation.
        The calls form one `CallGroup`: one deadline (`timeout_s`, queueing
        included) and one wake-up when the last answer is in, not a Future, a timer
        and a wake-up per station.
        """
        results: dict[str, CommandResult | CommandError] = {}
        prepared: dict[bool, _Prepared | CommandError] = {}  # by "is OCPP 1.6"
        adapters: dict[str, Any] = {}
        timeout = timeout_s or self.call_timeout_s
        group = CallGroup(self.loop)
        started = time.perf_counter()
        deadline = self.loop.time() + timeout
        with _no_gc_pauses():  # from the first send to the last answer
            for station_id in station_ids:
                if station_id in results or station_id in adapters:
                    continue  # listed twice: one call
                session = self.sessions.get(station_id)
                if session is None:
                    results[station_id] = StationNotConnected(station_id)
                    continue
                prep = prepared.get(session.v16)
                if prep is None:
                    prep = prepared[session.v16] = _prepare(command, session.v16)
                if isinstance(prep, CommandError):
                    results[station_id] = prep
                    continue
                item = Outgoing(prep.action, prep.payload, None, timeout, prep.encoded)
                item.group, item.key = group, station_id
                adapters[station_id] = prep.adapter
                group.add(session, item)
                session.enqueue(item, priority)
            group.seal(deadline)
            # one suspension for the whole fleet; if this wait is cancelled the timer
            # stays: it still times out the calls in flight at the deadline
            await group.done
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        # Answers are mostly identical ({"status": "Accepted"}): interpret each
        # distinct one once. Only flat all-string answers are reused — their
        # equality is identity of content (no 1 == True == 1.0 surprises).
        interpreted: dict[tuple[Any, ...], CommandResult] = {}
        for station_id, adapter in adapters.items():
            outcome = group.outcomes[station_id]
            if isinstance(outcome, Exception):
                results[station_id] = (
                    outcome if isinstance(outcome, CommandError) else CommandError(str(outcome))
                )
                continue
            key: tuple[Any, ...] | None = None
            if all(type(v) is str for v in outcome.values()):
                key = (adapter, *outcome.items())
                cached = interpreted.get(key)
                if cached is not None:
                    results[station_id] = cached
                    continue
            result = adapter.interpret(command, [outcome])
            result = CommandResult(result.status, result.response, elapsed_ms)
            if key is not None:
                interpreted[key] = result
            results[station_id] = result
        return results

    def send_limits(
        self,
        orders: Sequence[LimitOrder],
        batch: LimitBatch,
        on_outcomes: Callable[[list[LimitOutcome]], None],
        *,
        timeout_s: float | None = None,
    ) -> asyncio.Future[None]:
        """Grid limits for many EVSEs in one pass (`LimitPort.send_limits`).

        Like `broadcast`, but each station's frame differs: it is spliced from a
        template validated once per shape in this batch (`evflex.ocpp.limits`), so
        a station costs a `%` format, a queue check and a socket write — no task,
        Future or timer of its own. Every call takes the urgent lane: an idle
        station gets its frame before this returns, a busy one right after the call
        in flight. The calls form one streaming `CallGroup` (one deadline, queueing
        included); outcomes reach `on_outcomes` in batches as they settle.
        """
        timeout = timeout_s or self.call_timeout_s
        orders = tuple(orders)  # the command log re-encodes calls from them
        shapes: dict[limits.Shape, _Shaped | CommandError] = {}
        group = CallGroup(self.loop, _limit_outcomes(on_outcomes), _limit_payloads(orders, shapes))
        sessions_get = self.sessions.get
        add_item, add_session = group.items.append, group.sessions.append  # `group.add`, inline
        next_number, new_call = next_message_number, group_call
        # the previous order's shape, as its parts: a pass's orders mostly share one,
        # so the shape tuple is built and hashed only when they change (~0.2 µs each)
        v16_was: bool | None = None
        clear_was = notx_was = False
        purpose_was = unit_was = ""
        shaped: _Shaped | CommandError | None = None
        with _no_gc_pauses():  # a fleet-wide pass allocates ~10 objects per station
            for index, order in enumerate(orders):
                station_id, _, _, limit, unit, purpose, tx_id = order
                session = sessions_get(station_id)
                if session is None:
                    group.refuse(index, StationNotConnected(f"{station_id} not connected"))
                    continue
                v16 = session.v16
                if (
                    v16 is not v16_was
                    or purpose is not purpose_was
                    or unit is not unit_was
                    or (limit is None) is not clear_was
                    or (tx_id is None) is not notx_was
                ):  # (`is`: a new string equal to the last one only costs this lookup)
                    shape = limits.shape_of(order, v16)
                    shaped = shapes.get(shape)
                    if shaped is None:
                        shaped = shapes[shape] = _shaped(limits.build(shape, batch), session)
                    v16_was, purpose_was, unit_was = v16, purpose, unit
                    clear_was, notx_was = limit is None, tx_id is None
                if isinstance(shaped, CommandError):
                    group.refuse(index, shaped)
                    continue
                assert shaped is not None  # (set with the parts: never None here)
                number = next_number()  # unused if the station is busy: ids need no order
                frame = shaped.template.splice(order, number)
                if frame is None:
                    group.refuse(index, InvalidCommand(f"{station_id}: invalid {order}"))
                    continue
                item = new_call(shaped.action, timeout, group, index)
                add_item(item)
                add_session(session)
                if session.send_framed(item, number, frame):
                    shaped.sent += 1
                else:  # busy: queued ahead of routine calls, encoded again when its turn comes
                    item.encoded = shaped.template.splice(order)
                    session.enqueue(item, True)
            group.remaining += len(group.items)  # `group.add`'s count, once
            self._count_sent(shapes)
            group.seal(self.loop.time() + timeout)
        return group.done

    def _count_sent(self, shapes: dict[limits.Shape, _Shaped | CommandError]) -> None:
        """`stats.messages` of the frames `send_limits` sent at once: per (protocol,
        action) once per pass, not per station (queued calls count when sent)."""
        messages = self.stats.messages
        for shaped in shapes.values():
            if isinstance(shaped, _Shaped) and shaped.sent:
                messages[(shaped.protocol, shaped.action, "out")] += shaped.sent


class _Shaped:
    """A batch's template for one shape, and how many frames went out with it."""

    __slots__ = ("action", "protocol", "sent", "template")

    def __init__(self, template: limits.Template, protocol: str) -> None:
        self.template = template
        self.action = template.action
        self.protocol = protocol
        self.sent = 0


def _shaped(template: limits.Template | CommandError, session: Session) -> _Shaped | CommandError:
    return (
        template if isinstance(template, CommandError) else _Shaped(template, session.protocol_name)
    )


def _limit_payloads(
    orders: Sequence[LimitOrder], shapes: dict[limits.Shape, _Shaped | CommandError]
) -> Callable[[Session, Hashable], bytes | None]:
    """The payload of an order's call, spliced again for the command log (`CallGroup`)."""

    def encode(session: Session, key: Hashable) -> bytes | None:
        order = orders[_index(key)]
        shaped = shapes.get(limits.shape_of(order, session.v16))
        return shaped.template.splice(order) if isinstance(shaped, _Shaped) else None

    return encode


def _limit_outcomes(
    on_outcomes: Callable[[list[LimitOutcome]], None],
) -> Callable[[list[Settled]], None]:
    """CallGroup outcomes (payload or exception, by order index) → `LimitOutcome`s."""

    def deliver(settled: list[Settled]) -> None:
        out: list[LimitOutcome] = []
        for key, outcome in settled:
            index = _index(key)
            if isinstance(outcome, CommandError):
                out.append((index, None, outcome))
            elif isinstance(outcome, Exception):
                out.append((index, None, CommandError(str(outcome))))
            else:
                status = outcome.get("status")
                out.append((index, status if isinstance(status, str) else None, None))
        on_outcomes(out)

    return deliver


def _index(key: Hashable) -> int:
    assert isinstance(key, int)  # send_limits keys its calls by order index
    return key


_gc_holds = 0  # broadcasts waiting with the cyclic GC held off


@contextlib.contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """No cyclic garbage collection while a broadcast's answers come in.

    A broadcast allocates tens of thousands of short-lived objects, which triggers
    collections right in the middle of it; a full one took ~35 ms (measured,
    5,000 stations, every few broadcasts) of a ~130 ms broadcast. Reference
    counting still frees everything; the deferred collection runs after the last
    answer. The wait is bounded by the broadcast's deadline. Nested broadcasts
    share the hold; GC is only re-enabled if it was enabled before.
    """
    global _gc_holds
    if _gc_holds == 0 and not gc.isenabled():
        yield  # someone else turned it off: not ours to turn back on
        return
    _gc_holds += 1
    gc.disable()
    try:
        yield
    finally:
        _gc_holds -= 1
        if _gc_holds == 0:
            gc.enable()


@dataclass(frozen=True, slots=True)
class _Prepared:
    adapter: Any
    action: str
    payload: dict[str, Any]
    encoded: bytes


def _prepare(command: Command, v16_station: bool) -> _Prepared | CommandError:
    """Plan, validate and serialise a broadcast command once per protocol version.

    Every station of a version gets the same payload, so the schema check and the
    JSON encoding run once instead of once per station: a 5,000-station broadcast
    is then mostly socket writes.
    """
    planned = limits.plan_one_call(command, v16_station, "a broadcast command")
    if isinstance(planned, CommandError):
        return planned
    adapter, action, payload = planned
    return _Prepared(adapter, action, payload, orjson.dumps(payload))


def _negotiate(header: str) -> OcppVersion | None:
    offered = {p.strip() for p in header.split(",") if p.strip()}
    for version in _PREFERENCE:
        if version.value in offered:
            return version
    return None


def _basic_password(header: str | None, station_id: str) -> str | None:
    """Password from `Authorization: Basic base64(station_id:password)`, or None.

    OCPP security profile 1: the username must be the station's identity.
    """
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or user != station_id:
        return None
    return password
