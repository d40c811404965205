"""The startup pacer (evflex.ocpp.pacing): a connect storm's first frames get a bounded
share of each loop pass, in order, and none is lost.

Unit tests drive a Pacer with stand-in sessions whose handling costs a known CPU
time, so how many frames a pass handles is certain (one per pass below, however
slow the machine: being slower only adds to the time spent). The gateway tests run
over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from harness import V16, running_gateway, ts
from picows import WSMsgType
from picows.picows import _make_test_ws_frame

from evflex.fleet.events import StationBooted, StatusChanged
from evflex.ocpp.pacing import Pacer

COST_S = 0.002  # CPU per frame of the stand-in sessions: > the budget below


@dataclass
class FakeUnderlying:
    calls: list[str] = field(default_factory=list)

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


@dataclass
class FakeTransport:
    underlying_transport: FakeUnderlying = field(default_factory=FakeUnderlying)
    is_disconnected: bool = False


class FakeSession:
    """What the pacer uses of a Session: on_message, starting, transport."""

    def __init__(self, name: str, handled: list[tuple[str, bytes]]) -> None:
        self.name = name
        self.starting = True
        self.transport = FakeTransport()
        self._handled = handled

    def on_message(self, raw: bytes) -> None:
        busy_until = time.perf_counter() + COST_S
        while time.perf_counter() < busy_until:
            pass
        self._handled.append((self.name, raw))


def text(payload: bytes) -> Any:
    return _make_test_ws_frame(WSMsgType.TEXT, payload, True, False)


async def next_pass() -> None:
    await asyncio.sleep(0)  # the pacer's tick runs at the start of the next pass


async def test_frames_beyond_the_budget_wait_for_later_passes_in_order() -> None:
    pacer = Pacer(
        asyncio.get_running_loop(), budget_s=COST_S / 2, pass_share=0.0, startup_frames=10
    )
    handled: list[tuple[str, bytes]] = []
    a, b, c = (FakeSession(n, handled) for n in "abc")
    arrivals = [(a, b"a1"), (b, b"b1"), (a, b"a2"), (c, b"c1"), (b, b"b2")]
    for session, payload in arrivals:  # all in one pass, as from one epoll
        assert pacer.on_frame(session, text(payload)) is True  # type: ignore[arg-type]
    assert handled == [("a", b"a1")]  # the first one spent the budget
    assert pacer.frames_held == 4
    # each pass runs what one held station sent (its frames cost more than a budget)
    expected = [b"a1", b"b1", b"b2", b"a2", b"c1"]
    passes = 0
    while len(handled) < len(arrivals):
        await next_pass()
        passes += 1
        assert passes <= 3
    assert [p for _, p in handled] == expected  # per station in order; stations FIFO
    assert passes == 3
    assert not any(s.transport.underlying_transport.calls for s in (a, b, c))  # no pausing


async def test_a_long_pass_earns_a_proportional_budget() -> None:
    """A pass made long by established stations (a saturated server) gives the held
    frames `pass_share` of it in the next pass, not one fixed 1 ms budget."""
    pacer = Pacer(asyncio.get_running_loop(), budget_s=COST_S / 2, pass_share=0.5)
    handled: list[tuple[str, bytes]] = []
    sessions = [FakeSession(n, handled) for n in "abcd"]
    for session in sessions:  # one pass: the first runs, the others are held
        pacer.on_frame(session, text(session.name.encode()))  # type: ignore[arg-type]
    assert len(handled) == 1 and pacer.frames_held == 3
    busy_until = time.perf_counter() + 8 * COST_S  # the rest of the pass: other stations
    while time.perf_counter() < busy_until:
        pass
    await next_pass()  # budget >= 0.5 x 9 COST_S: the three held frames fit
    assert [name for name, _ in handled] == ["a", "b", "c", "d"]


async def test_a_session_is_established_after_its_startup_frames() -> None:
    pacer = Pacer(asyncio.get_running_loop(), budget_s=1.0, startup_frames=3)
    handled: list[tuple[str, bytes]] = []
    s = FakeSession("s", handled)
    for i in range(3):
        assert s.starting
        pacer.on_frame(s, text(b"%d" % i))  # type: ignore[arg-type]
    assert not s.starting  # the Session stops asking the pacer
    assert pacer.frames_paced == 3 and pacer.frames_held == 0


async def test_a_piling_up_session_is_paused_until_its_frames_ran() -> None:
    pacer = Pacer(asyncio.get_running_loop(), budget_s=COST_S / 2, pass_share=0.0, max_held=3)
    handled: list[tuple[str, bytes]] = []
    first, flood = FakeSession("first", handled), FakeSession("flood", handled)
    pacer.on_frame(first, text(b"x"))  # type: ignore[arg-type]
    for i in range(4):
        pacer.on_frame(flood, text(b"%d" % i))  # type: ignore[arg-type]
    assert flood.transport.underlying_transport.calls == ["pause"]
    for _ in range(3):
        await next_pass()
    assert [p for n, p in handled if n == "flood"] == [b"0", b"1", b"2", b"3"]
    assert flood.transport.underlying_transport.calls == ["pause", "resume"]


async def test_held_frames_of_a_station_that_leaves_are_still_handled() -> None:
    pacer = Pacer(asyncio.get_running_loop(), budget_s=COST_S / 2, pass_share=0.0)
    handled: list[tuple[str, bytes]] = []
    a, b = FakeSession("a", handled), FakeSession("b", handled)
    pacer.on_frame(a, text(b"a1"))  # type: ignore[arg-type]
    pacer.on_frame(b, text(b"b1"))  # type: ignore[arg-type]
    pacer.on_frame(b, text(b"b2"))  # type: ignore[arg-type]
    pacer.on_disconnected(b)  # type: ignore[arg-type]
    assert handled == [("a", b"a1"), ("b", b"b1"), ("b", b"b2")]
    await next_pass()  # its queue entry is skipped, nothing runs twice
    assert len(handled) == 3


async def test_a_control_frame_behind_held_frames_lets_them_run_first() -> None:
    pacer = Pacer(asyncio.get_running_loop(), budget_s=COST_S / 2, pass_share=0.0)
    handled: list[tuple[str, bytes]] = []
    a, b = FakeSession("a", handled), FakeSession("b", handled)
    pacer.on_frame(a, text(b"a1"))  # type: ignore[arg-type]
    pacer.on_frame(b, text(b"b1"))  # type: ignore[arg-type]
    close = _make_test_ws_frame(WSMsgType.CLOSE, b"\x03\xe8", True, False)
    assert pacer.on_frame(b, close) is False  # type: ignore[arg-type]  # the session's to handle
    assert handled == [("a", b"a1"), ("b", b"b1")]  # ... after what it sent before


# -- the gateway, over real sockets ----------------------------------------------------------
async def test_a_storm_of_pipelined_boots_is_answered_in_order_and_recorded() -> None:
    """Every new station sends its boot sequence without waiting for answers; with a
    budget so small that each pass handles one station, frames are held, and still
    every station gets every answer, in order, and the fleet sees every status."""
    async with running_gateway() as h:
        assert h.gateway.pacer is not None
        h.gateway.pacer.budget_s, h.gateway.pacer.pass_share = 1e-9, 0.0
        n = 20

        async def station(i: int) -> list[str]:
            sid = f"STORM-{i}"
            h.directory.add(sid)
            async with h.connect(sid, V16) as ws:
                frames = [
                    [
                        2,
                        "b",
                        "BootNotification",
                        {"chargePointVendor": "V", "chargePointModel": "M"},
                    ],
                    *(
                        [
                            2,
                            f"s{c}",
                            "StatusNotification",
                            {
                                "connectorId": c,
                                "errorCode": "NoError",
                                "status": "Available",
                                "timestamp": ts(),
                            },
                        ]
                        for c in (1, 2)
                    ),
                ]
                for frame in frames:
                    await ws.send(json.dumps(frame))
                answers = [json.loads(await ws.recv()) for _ in frames]
                return [f"{a[0]}:{a[1]}" for a in answers]

        results = await asyncio.gather(*(station(i) for i in range(n)))
        assert results == [["3:b", "3:s1", "3:s2"]] * n
        assert h.gateway.pacer.frames_held > 0
        assert len(h.of_type(StationBooted)) == n
        assert len(h.of_type(StatusChanged)) == 2 * n


async def test_an_established_station_is_not_paced() -> None:
    async with running_gateway() as h:
        pacer = h.gateway.pacer
        assert pacer is not None
        h.directory.add("EST-1")
        async with h.connect("EST-1", V16) as ws:

            async def call(i: int, action: str, payload: dict[str, Any]) -> None:
                await ws.send(json.dumps([2, str(i), action, payload]))
                assert json.loads(await ws.recv())[:2] == [3, str(i)]

            await call(0, "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
            for i in range(1, pacer.startup_frames):
                await call(i, "Heartbeat", {})
            assert not h.gateway.sessions["EST-1"].starting
            paced = pacer.frames_paced
            pacer.budget_s, pacer.pass_share = 1e-9, 0.0  # a storm: new stations wait
            await call(99, "Heartbeat", {})
            assert pacer.frames_paced == paced  # it went straight to the session
