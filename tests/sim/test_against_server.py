"""The simulator against the real evflex server, run as a separate process on loopback.

Only the wire and the REST API connect them: the server is started with
`python -m evflex serve`, the fleet runs in this process, and the assertions read
`GET /api/v1/fleet` and `/api/v1/stations` with an admin token.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from evflex.sim import Fleet, FleetConfig, SessionConfig, SessionMode

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("evflex.app") is None, reason="the evflex server is not there yet"
)
PER_CLASS = 20
CLASSES = ("ac16", "ac201", "dc201", "v2g201", "bess16")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    ocpp_url: str
    api: str
    token: str


async def _token(db: str) -> str:
    """`evflex token create --role admin`: the token is the last line of its output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "evflex", "token", "create", "--role", "admin", "--db", db,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip().splitlines()[-1]


async def _wait_port(port: int, proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.returncode is None, "the server exited during start-up"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.2)  # cross-process: poll with a deadline
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nothing listening on {port} after {timeout_s} s")


@asynccontextmanager
async def running_server(workdir: Path) -> AsyncIterator[Server]:
    """`evflex serve` on loopback with a fresh SQLite database in `workdir`, and an admin token."""
    db = f"sqlite+aiosqlite:///{workdir / 'evflex.db'}"
    ocpp_port, http_port = free_port(), free_port()
    log = (workdir / "server.log").open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "evflex", "serve", "--host", "127.0.0.1",
        "--ocpp-port", str(ocpp_port), "--http-port", str(http_port), "--db", db,
        "--allow-unknown-stations",
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        try:
            await _wait_port(ocpp_port, proc, 30)
            await _wait_port(http_port, proc, 30)
        except AssertionError as exc:
            tail = (workdir / "server.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"{exc}; end of server.log:\n{tail}") from None
        token = await _token(db)
        yield Server(f"ws://127.0.0.1:{ocpp_port}/ocpp", f"http://127.0.0.1:{http_port}", token)
    finally:
        try:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await asyncio.wait_for(proc.wait(), 5)
        finally:
            log.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path) as started:
        yield started


async def poll(
    client: httpx.AsyncClient,
    path: str,
    done: Callable[[Any], bool],
    timeout_s: float,
    every_s: float = 0.5,
) -> Any:
    """GET `path` until `done(body)`; the server is another process, so poll with a deadline."""
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        response = await client.get(path)
        response.raise_for_status()
        body = response.json()
        if done(body):
            return body
        await asyncio.sleep(every_s)
    raise AssertionError(f"{path} never satisfied the condition; last answer: {body}")


async def test_every_model_connects_and_reports_power(server: Server) -> None:
    mix = ",".join(f"{c}:1" for c in CLASSES)
    config = FleetConfig(
        csms=server.ocpp_url,
        stations=PER_CLASS * len(CLASSES),
        mix=mix,
        seed=11,
        password="integration-password-1",
        sessions=SessionConfig(SessionMode.ALL),
        meter_interval_s=1,
    )
    headers = {"Authorization": f"Bearer {server.token}"}
    async with (
        Fleet(config) as fleet,
        httpx.AsyncClient(base_url=server.api, headers=headers) as api,
    ):
        assert await fleet.wait_booted(timeout_s=30)
        total = len(fleet.stations)
        body = await poll(
            api,
            "/api/v1/fleet",
            lambda b: b["stations_connected"] == total and b["power_w"] > 0,
            30,
        )
        assert body["connections_by_protocol"] == {
            "ocpp1.6": 2 * PER_CLASS,
            "ocpp2.0.1": 3 * PER_CLASS,
        }
        listed = {s["id"]: s for s in (await api.get("/api/v1/stations")).json()}
        for st in fleet.stations:
            row = listed[st.station_id]
            assert (row["vendor"], row["model"], row["firmware"]) == (
                st.model.vendor, st.model.model, st.model.firmware,
            )  # fmt: skip
        for st in fleet.stations[:10]:
            expected = {e.id for e in st.evses if e.power_w > 0}
            detail = await poll(
                api,
                f"/api/v1/stations/{st.station_id}",
                lambda d, want=expected: (
                    want <= {e["evse_id"] for e in d["evses"] if (e["power_w"] or 0) > 0}
                ),
                15,
            )
            assert detail["connected"]
        # 2.0.1 cars state their needs (K17 NotifyEVChargingNeeds); evflex keeps them
        cars = [
            (st, e)
            for st in fleet.stations
            if st.model.ocpp.value == "ocpp2.0.1" and st.model.kind.value != "bess"
            for e in st.evses
            if e.ev is not None and e.tx is not None
        ]
        assert cars
        for st, e in cars[:5]:
            r = await api.get(f"/api/v1/stations/{st.station_id}/evses/{e.id}/session")
            assert r.status_code == 200, r.text
            needs = r.json()
            assert needs["source"] == "ev" and needs["energy_need_wh"] >= 0
            assert needs["departure"] is not None
        assert fleet.stats.call_errors == 0


async def test_curtailment_through_the_csms_takes_hold_and_self_releases(server: Server) -> None:
    """A fleet-wide TxDefault limit sent by evflex is applied after each station's delay,
    and lifts by itself at validTo, with no further command (1.6 §7.7, 2.0.1 K01)."""
    from datetime import UTC, datetime, timedelta

    from evflex.sim import DelayModel

    config = FleetConfig(
        csms=server.ocpp_url,
        stations=20,
        mix="ac16@Home 7:1,ac201@Home 11 Pro:1",
        password="integration-password-2",
        sessions=SessionConfig(SessionMode.ALL),
        meter_interval_s=1,
        delays=DelayModel(0.5, 1.0, 0.0, 1.0),
    )
    headers = {"Authorization": f"Bearer {server.token}"}
    async with (
        Fleet(config) as fleet,
        httpx.AsyncClient(base_url=server.api, headers=headers) as api,
    ):
        assert await fleet.wait_booted(timeout_s=30)
        assert await fleet.wait_until(lambda: all(s.power_w > 0 for s in fleet.stations), 10)
        before = sum(s.power_w for s in fleet.stations)
        await poll(api, "/api/v1/fleet", lambda b: b["power_w"] > 0.95 * before, 15)
        now = datetime.now(UTC)
        profile = {
            "profile_id": 77, "purpose": "tx_default", "unit": "A",
            "periods": [{"start_s": 0, "limit": 8}], "start_schedule": now.isoformat(),
            "valid_to": (now + timedelta(seconds=10)).isoformat(),
        }  # fmt: skip
        sent = await api.post(
            "/api/v1/fleet/commands/set_charging_profile",
            json={"evse_id": 0, "profile": profile},
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["by_status"] == {"Accepted": 20}
        await poll(api, "/api/v1/fleet", lambda b: b["power_w"] < 0.7 * before, 10)
        await poll(api, "/api/v1/fleet", lambda b: b["power_w"] > 0.9 * before, 20)
        assert fleet.stats.profiles_received == 20
