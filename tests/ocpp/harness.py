"""A gateway on loopback with an in-memory directory, for protocol-level tests."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import websockets

from evflex.fleet.credentials import hash_password, verify_password
from evflex.fleet.events import Event
from evflex.fleet.state import FleetState
from evflex.ocpp.gateway import Gateway

PASSWORD = "correct-horse-battery-staple"


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

    def url(self, station_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/{station_id}"

    def sink(self, event: Event) -> None:
        self.fleet.apply(event)
        self.events.append(event)
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(event):
                future.set_result(event)

    async def wait_for(self, predicate: Any, timeout_s: float = 5.0) -> Event:
        """Wait for the first event (past or future) matching `predicate`."""
        for event in self.events:
            if predicate(event):
                return event
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        return await asyncio.wait_for(future, timeout_s)

    @asynccontextmanager
    async def connect(
        self, station_id: str, subprotocol: str = "ocpp1.6", password: str | None = PASSWORD,
    ) -> AsyncIterator[websockets.ClientConnection]:
        headers = {}
        if password is not None:
            token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        async with websockets.connect(
            self.url(station_id), subprotocols=[websockets.Subprotocol(subprotocol)],
            additional_headers=headers, open_timeout=5,
        ) as ws:
            yield ws


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
    try:
        yield harness
    finally:
        await gateway.stop()
