"""The picows load generator against in-process OCPP-J servers (loopback, bounded)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from evflex.bench import echo, frames
from evflex.bench.loadgen import ClosedLoopTelemetry, LoadFleet, OpenLoopTelemetry
from evflex.bench.stats import open_loop_latencies


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    server = await echo.start_picows("127.0.0.1", 0)
    yield f"ws://127.0.0.1:{echo.bound_port(server)}/ocpp/"
    server.close()
    await server.wait_closed()


def _creds(n: int) -> list[tuple[str, str | None]]:
    return [(f"T{i:03d}", "password-0123456789") for i in range(n)]


async def _charging_fleet(url: str, n: int) -> LoadFleet:
    fleet = LoadFleet(url, _creds(n))
    stats = await fleet.connect(8, boot=True, timeout_s=10)
    assert (stats.connected, stats.booted, sum(stats.errors.values())) == (n, n, 0)
    assert stats.all_booted_s is not None and stats.all_booted_s > 0
    assert len(stats.handshake_s) == n
    assert await fleet.start_transactions(10) == n
    assert all(s.mv_prefix for s in fleet.stations)
    return fleet


def test_meter_values_frame_is_valid_ocpp_json() -> None:
    frame = frames.meter_values(
        b"42", frames.meter_values_prefix(7), b"2026-01-01T00:00:00.000Z", 9
    )
    msg = orjson.loads(frame)
    assert msg[:3] == [2, "42", "MeterValues"]
    payload = msg[3]
    assert payload["connectorId"] == 1 and payload["transactionId"] == 7
    sampled = payload["meterValue"][0]["sampledValue"]
    assert [s["measurand"] for s in sampled] == [
        "Power.Active.Import",
        "Energy.Active.Import.Register",
    ]
    assert sampled[1]["value"] == "9"


async def test_open_loop_sends_on_schedule(echo_url: str) -> None:
    fleet = await _charging_fleet(echo_url, 10)
    try:
        load = OpenLoopTelemetry(fleet, fleet.stations, rate_hz=20, duration_s=0.5)
        await load.run(drain_s=2)
        assert load.sent == load.acked == load.schedule.total == 100
        assert load.call_errors == 0
        t0 = load.schedule.t0
        lat = open_loop_latencies(load.schedule, load.sent_at, load.acked_at, (t0, t0 + 0.5))
        assert lat.scheduled == lat.acked == 100
        assert all(math.isfinite(v) and v > 0 for v in lat.corrected)
        # each corrected latency is ≥ the service time of the same message
        assert max(lat.corrected) >= max(lat.service)
        # every station sent the same number of messages: the schedule is round-robin
        assert {s.energy_wh for s in fleet.stations} == {20}
    finally:
        await fleet.close()


async def test_closed_loop_keeps_window_in_flight(echo_url: str) -> None:
    fleet = await _charging_fleet(echo_url, 5)
    edges: list[str] = []
    try:
        load = ClosedLoopTelemetry(fleet, fleet.stations, window=2, warmup_s=0.1, duration_s=0.3)
        await load.run(drain_s=2, on_window=edges.append)
        assert edges == ["start", "end"]
        assert load.acked_in_window > 10
        assert len(load.latencies) == load.acked_in_window
        assert load.sent == load.acked  # drained: nothing left in flight
        assert all(not s.sent_at for s in fleet.stations)
    finally:
        await fleet.close()


class _CommandingListener(WSListener):
    """Answers BootNotification, then sends the station a SetChargingProfile CALL."""

    answers: list[Any]

    def __init__(self, answers: list[Any]) -> None:
        super().__init__()
        self.answers = answers

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        msg = orjson.loads(frame.get_payload_as_bytes())
        if msg[0] == 2:
            transport.send(WSMsgType.TEXT, orjson.dumps([3, msg[1], {"status": "Accepted"}]))
            payload = {"connectorId": 1, "csChargingProfiles": {}}
            transport.send(WSMsgType.TEXT, orjson.dumps([2, "c1", "SetChargingProfile", payload]))
        else:
            self.answers.append(msg)


async def test_station_answers_server_calls_accepted() -> None:
    answers: list[Any] = []

    def upgrade(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        response = WSUpgradeResponse.create_101_response(
            extra_headers={"Sec-WebSocket-Protocol": "ocpp1.6"}
        )
        return WSUpgradeResponseWithListener(response, _CommandingListener(answers))

    server = await ws_create_server(upgrade, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fleet = LoadFleet(f"ws://127.0.0.1:{port}/ocpp/", _creds(3))
    try:
        stats = await fleet.connect(3, boot=True, timeout_s=5)
        assert stats.booted == 3
        for _ in range(500):  # bounded: at most 5 s
            if len(answers) >= 3:
                break
            await asyncio.sleep(0.01)
        assert answers == [[3, "c1", {"status": "Accepted"}]] * 3
        assert fleet.calls_received["SetChargingProfile"] == 3
        assert math.isfinite(fleet.last_call_answered)
    finally:
        await fleet.close()
        server.close()
        await server.wait_closed()


async def test_refused_handshakes_are_counted() -> None:
    def refuse(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        response = WSUpgradeResponse.create_error_response(401, b"no")
        return WSUpgradeResponseWithListener(response, None)

    server = await ws_create_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fleet = LoadFleet(f"ws://127.0.0.1:{port}/ocpp/", _creds(4))
    try:
        stats = await fleet.connect(2, boot=True, timeout_s=5)
        assert stats.connected == 0
        assert stats.errors == {"handshake_401": 4}
        assert stats.all_booted_s is None
    finally:
        await fleet.close()
        server.close()
        await server.wait_closed()


async def test_connect_is_bounded_in_time() -> None:
    # a listener that accepts TCP but never answers the WebSocket upgrade
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fleet = LoadFleet(f"ws://127.0.0.1:{port}/ocpp/", _creds(2), handshake_timeout_s=10)
    try:
        stats = await fleet.connect(2, boot=True, timeout_s=0.3)
        assert stats.connected == 0
        assert stats.errors["timeout"] == 2
    finally:
        await fleet.close()
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
