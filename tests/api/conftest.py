"""A whole evflex server (App) on loopback with a temp SQLite database, plus helpers."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from evflex.app import App
from evflex.config import Settings

PASSWORD = "api-test-password-0123"


@dataclass
class Server:
    app: App
    http: httpx.AsyncClient
    token: str

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.app.ports.ocpp}/ocpp"

    async def register(self, station_id: str, password: str = PASSWORD) -> None:
        r = await self.http.post("/api/v1/stations", json={"id": station_id, "password": password})
        assert r.status_code == 201, r.text

    @asynccontextmanager
    async def connect(
        self,
        station_id: str,
        subprotocol: str = "ocpp1.6",
        password: str = PASSWORD,
    ) -> AsyncIterator[websockets.ClientConnection]:
        auth = base64.b64encode(f"{station_id}:{password}".encode()).decode()
        async with websockets.connect(
            f"{self.ocpp_url}/{station_id}",
            subprotocols=[websockets.Subprotocol(subprotocol)],
            additional_headers={"Authorization": f"Basic {auth}"},
            open_timeout=5,
        ) as ws:
            yield ws


@asynccontextmanager
async def running_server(db_url: str, **settings: Any) -> AsyncIterator[Server]:
    app = App(Settings(db=db_url, ocpp_port=0, http_port=0, **settings))
    await app.start()
    try:
        token = await app.repository.create_token("admin", "tests")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{app.ports.http}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ) as http:
            yield Server(app, http, token)
    finally:
        await app.stop()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/evflex.db"


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Server]:
    async with running_server(db_url) as srv:
        yield srv
