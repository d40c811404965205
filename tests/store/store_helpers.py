"""Helpers shared by the storage tests (a uniquely named module, importable from tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from evflex.fleet.events import MeterSampled, SampledValue
from evflex.store import db


@dataclass(frozen=True)
class Target:
    """Where one test's database lives."""

    backend: str  # "sqlite" | "postgres"
    url: str
    search_path: str | None = None

    def engine(self) -> AsyncEngine:
        return db.create_engine(self.url, search_path=self.search_path)

    async def upgrade(self) -> None:
        await asyncio.to_thread(db.upgrade, self.url, search_path=self.search_path)

    def with_url(self, url: str) -> Target:
        return Target(self.backend, url, self.search_path)


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float, interval_s: float = 0.01
) -> float:
    """Poll `check` until it is true; return the seconds it took, fail after `timeout_s`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await check():
        if loop.time() - started > timeout_s:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)
    return loop.time() - started


class TcpProxy:
    """A TCP forwarder we can take down and bring back: a PostgreSQL "outage"."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut the live ones."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.transport.abort()
        self._writers.discard(dst)


T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


def meter(
    station_id: str,
    evse_id: int,
    seconds: float,
    *values: SampledValue,
    tx: str | None = None,
) -> MeterSampled:
    return MeterSampled(station_id, evse_id, at(seconds), at(seconds + 0.5), values, tx)


def power(value: float, unit: str = "W", phase: str | None = None) -> SampledValue:
    return SampledValue("Power.Active.Import", value, unit, phase)


def energy(value: float, unit: str = "Wh") -> SampledValue:
    return SampledValue("Energy.Active.Import.Register", value, unit)


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql), params)).mappings()]
