"""A gateway on loopback with an in-memory directory, for protocol-level tests.

`Harness.station(...)` connects a library-based test station (see ocpp_stations.py).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets
from ocpp_stations import Station16, Station201  # re-exported for tests

from evflex.fleet.commands import CommandResult
from evflex.fleet.credentials import hash_password, verify_password
from evflex.fleet.events import Event
from evflex.fleet.state import FleetState
from evflex.ocpp.gateway import Gateway
from evflex.ocpp.session import Session

PASSWORD = "correct-horse-battery-staple"
V16, V201 = "ocpp1.6", "ocpp2.0.1"


def ts(offset_s: float = 0.0) -> str:
    """An RFC 3339 UTC timestamp `offset_s` seconds from now."""
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat()


@dataclass
class MemoryDirectory:
    fleet: FleetState
    hashes: dict[str, str] = field(default_factory=dict)

    def add(self, station_id: str, password: str | None = PASSWORD) -> None:
        self.hashes[station_id] = hash_password(password) if password else ""

    def credential(self, station_id: str) -> str | None:
        return self.hashes.get(station_id)

    def verify(self, station_id: str, password: str) -> bool:
        return verify_password(password, self.hashes.get(station_id, ""))

    def register_unknown(self, station_id: str, password: str | None) -> None:
        self.add(station_id, password)

    def has_booted(self, station_id: str) -> bool:
        station = self.fleet.stations.get(station_id)
        return station is not None and station.booted_at is not None

    def authorize(self, station_id: str, id_token: str) -> str:
        return "Blocked" if id_token == "BLOCKED" else "Accepted"

    def allocate_transaction_id(self) -> int:
        return self.fleet.allocate_transaction_id()


@dataclass
class Harness:
    gateway: Gateway
    fleet: FleetState
    directory: MemoryDirectory
    events: list[Event]
    port: int
    _waiters: list[tuple[Any, asyncio.Future[Event]]] = field(default_factory=list)
    _detached: dict[int, asyncio.Future[None]] = field(default_factory=dict)

    def url(self, station_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/{station_id}"

    def sink(self, event: Event) -> None:
        self.fleet.apply(event)
        self.events.append(event)
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(event):
                future.set_result(event)

    async def wait_for(self, predicate: Any, timeout_s: float = 5.0, *, since: int = 0) -> Event:
        """Wait for the first event (from index `since` on, past or future) matching `predicate`."""
        for event in self.events[since:]:
            if predicate(event):
                return event
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        return await asyncio.wait_for(future, timeout_s)

    def of_type(self, kind: type, station_id: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (station_id is None or e.station_id == station_id)
        ]

    def detached(self, session: Session) -> asyncio.Future[None]:
        """Resolves when the gateway has processed the disconnect of `session`."""
        if id(session) not in self._detached:
            self._detached[id(session)] = asyncio.get_running_loop().create_future()
        return self._detached[id(session)]

    def _on_detach(self, session: Session) -> None:
        future = self.detached(session)
        if not future.done():
            future.set_result(None)

    def assert_fleet(self, *, connected: int, charging: int, power_w: float) -> None:
        """The running aggregates are exact (equal to a full recompute) and as expected."""
        summary = self.fleet.summary()
        assert summary == self.fleet.recompute()
        assert (summary.stations_connected, summary.evses_charging, summary.power_w) == (
            connected,
            charging,
            power_w,
        )

    async def round_trip(
        self, station: Any, command: Any, *actions: str, **options: Any
    ) -> tuple[list[dict[str, Any]], CommandResult]:
        """Send `command` through the gateway; the payloads the station received, and the result.

        `actions` are the CALLs the station must receive, in order (one for most commands).
        """
        task = asyncio.create_task(self.gateway.send(station.id, command, **options))
        payloads = []
        for action in actions:
            frame = await station.expect_call(action)
            assert len(frame) == 4 and isinstance(frame[1], str) and frame[1]
            payloads.append(frame[3])
        return payloads, await task

    @asynccontextmanager
    async def connect(
        self,
        station_id: str,
        subprotocol: str | list[str] | None = V16,
        password: str | None = PASSWORD,
        *,
        authorization: str | None = None,
        **options: Any,
    ) -> AsyncIterator[websockets.ClientConnection]:
        headers = {}
        if authorization is not None:
            headers["Authorization"] = authorization
        elif password is not None:
            token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        offered = [subprotocol] if isinstance(subprotocol, str) else (subprotocol or [])
        async with websockets.connect(
            self.url(station_id),
            subprotocols=[websockets.Subprotocol(p) for p in offered] or None,
            additional_headers=headers,
            open_timeout=5,
            close_timeout=2,
            **options,
        ) as ws:
            yield ws

    @asynccontextmanager
    async def station(
        self,
        station_id: str,
        version: str = V16,
        *,
        boot: bool = True,
        register: bool = True,
        station_class: type[Any] | None = None,
    ) -> AsyncIterator[Any]:
        """A connected library-based station (booted unless `boot=False`)."""
        if register and station_id not in self.directory.hashes:
            self.directory.add(station_id)
        cls = station_class or (Station16 if version == V16 else Station201)
        async with self.connect(station_id, version) as ws:
            assert ws.subprotocol == version
            cp = cls(station_id, ws)
            serving = asyncio.create_task(cp.serve())
            try:
                if boot:
                    response = await cp.boot()
                    assert response.status == "Accepted"
                yield cp
            finally:
                serving.cancel()
                await cp.stop_tasks()
                await asyncio.gather(serving, return_exceptions=True)


@asynccontextmanager
async def running_gateway(**options: Any) -> AsyncIterator[Harness]:
    fleet = FleetState()
    directory = MemoryDirectory(fleet)
    events: list[Event] = []
    holder: list[Harness] = []
    gateway = Gateway(directory, lambda e: holder[0].sink(e), **options)
    port = await gateway.start("127.0.0.1", 0)
    harness = Harness(gateway, fleet, directory, events, port)
    holder.append(harness)
    detach = gateway.detach

    def observed_detach(session: Session) -> None:
        detach(session)
        harness._on_detach(session)

    gateway.detach = observed_detach  # type: ignore[method-assign]
    try:
        yield harness
    finally:
        await gateway.stop()
