"""Pacing of new connections: a connect storm gets a bounded share of each loop pass.

Why: the event loop handles every socket that is ready in one pass (epoll), then
the next. When thousands of stations connect and boot at once, hundreds of them
have a frame ready in every pass (BootNotification, StatusNotifications, ...), and
a pass took 60-270 ms (measured, 5,000 stations, 500 handshakes in flight): a
station that was already connected waited that long for the acknowledgement of
its MeterValues, however cheap its own message.

So the first `startup_frames` frames of each connection are handled within a
budget of CPU per loop pass: `budget_s`, or `pass_share` of the previous pass
(from its first paced frame on) if that is more. A frame that arrives when the
budget is spent is kept, in order, until its turn comes in a later pass, first
come first served; later frames of that connection queue behind it. Established
connections are never held. The pacer is work-conserving: it holds frames only
while the budget is spent, so outside a storm nothing waits. Only complete
text/binary frames are held; a control frame or a fragment behind held frames
makes them run first, in order.

Why the share: when established stations saturate the server, libuv handles
every ready socket before it returns, and a pass lasts ~1-2 s. With a fixed 2 ms
per pass, a station that had just booted waited seconds for each of its first
frames' answers (`evflex bench telemetry-max`, 5,000 stations: service time
p99.9 10.4-11.1 s, max 16.4-16.6 s; with the share p99.9 294-349 ms, max 299-354
ms, every station served alike). In a storm the share bounds what new stations
cost the established ones in proportion to the pass.

A held connection's socket keeps being read: an OCPP station waits for the answer
to its call before it sends the next, so there is rarely more to read, and
pausing and resuming the socket for every held frame cost more than the reads
(pause_reading/resume_reading were ~30 % of the pacer's time, measured). Only a
connection that piles up `max_held` frames is paused (backpressure).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

from picows import WSFrame, WSMsgType

if TYPE_CHECKING:
    from evflex.ocpp.session import Session

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


class Pacer:
    """One per gateway. Sessions call `on_frame` while they are starting up."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        budget_s: float = 0.002,
        pass_share: float = 0.1,
        startup_frames: int = 10,
        max_held: int = 32,
    ) -> None:
        self.loop = loop
        self.budget_s = budget_s
        self.pass_share = pass_share
        self._budget = budget_s  # of the current pass
        self._tick_due_at = 0.0  # when the pending tick was scheduled (perf_counter)
        self.startup_frames = startup_frames
        self.max_held = max_held
        self._spent = 0.0  # in the current loop pass
        self._tick_scheduled = False
        self._left: dict[Session, int] = {}  # frames left before it is established
        self._held: dict[Session, deque[bytes]] = {}
        self._queue: deque[Session] = deque()  # sessions with held frames, in order
        self._paused: set[Session] = set()
        self.frames_held = 0  # counters, for tests and metrics
        self.frames_paced = 0

    def on_frame(self, session: Session, frame: WSFrame) -> bool:
        """Handle or hold `frame`: True when it is dealt with, False when the session
        must handle it itself (not a complete data frame). Returns with
        `session.starting` cleared once the session is established."""
        held = self._held.get(session)
        complete = frame.fin and frame.msg_type in _DATA
        if held is not None:
            if complete:
                held.append(frame.get_payload_as_bytes())
                self.frames_held += 1
                if len(held) >= self.max_held and session not in self._paused:
                    self._pause(session)
                return True
            self._release(session)  # a control frame or fragment: in order, now
            return False
        if not complete:
            return False
        if self._spent >= self._budget:
            self._hold(session, frame.get_payload_as_bytes())
            return True
        self._run(session, frame.get_payload_as_bytes())
        return True

    def on_disconnected(self, session: Session) -> None:
        """The frames it sent before it left are handled (their answers go nowhere)."""
        if session in self._held:
            self._release(session)
        self._left.pop(session, None)

    # -- internals -----------------------------------------------------------------
    def _run(self, session: Session, payload: bytes) -> None:
        started = time.perf_counter()
        session.on_message(payload)
        self._spent += time.perf_counter() - started
        self.frames_paced += 1
        left = self._left.get(session, self.startup_frames) - 1
        if left <= 0:
            self._left.pop(session, None)
            session.starting = False
        else:
            self._left[session] = left
        if not self._tick_scheduled:
            # the budget is per loop pass: a callback scheduled now runs at the start
            # of the next pass, and starts the next budget
            self._tick_scheduled = True
            self._tick_due_at = started
            self.loop.call_soon(self._tick)

    def _hold(self, session: Session, payload: bytes) -> None:
        self._held[session] = deque((payload,))
        self._queue.append(session)
        self.frames_held += 1

    def _pause(self, session: Session) -> None:
        transport = session.transport
        if transport is not None:
            self._paused.add(session)
            transport.underlying_transport.pause_reading()

    def _release(self, session: Session) -> None:
        """Handle all of `session`'s held frames now (and read its socket again)."""
        held = self._held.pop(session)
        while held:
            self._run(session, held.popleft())
        if session in self._paused:
            self._paused.discard(session)
            transport = session.transport
            if transport is not None and not transport.is_disconnected:
                transport.underlying_transport.resume_reading()

    def _tick(self) -> None:
        self._tick_scheduled = False
        self._spent = 0.0
        # the pass since the tick was asked for: at least the rest of it, not the
        # idle time before a storm
        pass_s = time.perf_counter() - self._tick_due_at
        self._budget = max(self.budget_s, self.pass_share * pass_s)
        queue = self._queue
        while queue and self._spent < self._budget:
            session = queue.popleft()
            if session in self._held:  # not released out of turn meanwhile
                self._release(session)
