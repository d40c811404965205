"""The WebSocket handshake (path, subprotocol, Basic auth), replaced connections and reconnects."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import websockets
from harness import PASSWORD, V16, V201, Harness, running_gateway, ts
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from websockets.exceptions import InvalidStatus

from evflex.fleet import commands as c
from evflex.fleet.events import StationConnected, StationDisconnected
from evflex.fleet.model import Protocol


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def refused(h: Harness, station_id: str, *args: Any, **options: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        async with h.connect(station_id, *args, **options):
            pass
    return caught.value


@pytest.mark.parametrize("offered", [["ocpp2.1"], ["ocpp1.5", "ocpp2.0"], None], ids=str)
async def test_unsupported_subprotocol_is_http_400(offered: list[str] | None) -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP")
        error = await refused(h, "CP", offered)
        assert error.response.status_code == 400
        assert h.gateway.stats.handshake_rejections == {"unsupported_subprotocol": 1}
        assert h.of_type(StationConnected) == []


@pytest.mark.parametrize("offered", [[V16, V201], [V201, V16]], ids=str)
async def test_both_offered_picks_201(offered: list[str]) -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP")
        async with h.connect("CP", offered) as ws:
            assert ws.subprotocol == V201
            connected = await h.wait_for(lambda e: isinstance(e, StationConnected))
            assert connected.protocol is Protocol.OCPP201
            assert h.gateway.protocol_counts() == {V16: 0, V201: 1}
            boot = {"chargingStation": {"model": "M", "vendorName": "V"}, "reason": "PowerUp"}
            await ws.send(json.dumps([2, "b", "BootNotification", boot]))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))[:2] == [3, "b"]


@pytest.mark.parametrize(
    ("station_id", "options", "reason"),
    [
        pytest.param("CP", {"password": "wrong-password-0123"}, "bad_credentials", id="wrong"),
        pytest.param("CP", {"password": None}, "bad_credentials", id="missing"),
        pytest.param(
            "CP", {"authorization": basic("OTHER", PASSWORD)}, "bad_credentials", id="user-mismatch"
        ),
        pytest.param("CP", {"authorization": "Bearer " + PASSWORD}, "bad_credentials", id="bearer"),
        pytest.param("CP", {"authorization": "Basic %%%"}, "bad_credentials", id="bad-base64"),
        pytest.param("STRANGER", {}, "unknown_station", id="unknown-station"),
    ],
)
async def test_authentication_failures_are_http_401(
    station_id: str, options: dict[str, Any], reason: str
) -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP")
        error = await refused(h, station_id, **options)
        assert error.response.status_code == 401
        assert error.response.headers["WWW-Authenticate"].startswith("Basic")
        assert h.gateway.stats.handshake_rejections == {reason: 1}
        assert h.gateway.sessions == {} and h.of_type(StationConnected) == []
        assert "STRANGER" not in h.directory.hashes
        async with h.connect("CP") as ws:  # the right credentials still work
            assert ws.subprotocol == V16


async def test_bad_path_is_404_and_bad_identity_is_400() -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP")
        with pytest.raises(InvalidStatus) as caught:
            async with websockets.connect(
                f"ws://127.0.0.1:{h.port}/elsewhere/CP", subprotocols=[websockets.Subprotocol(V16)]
            ):
                pass
        assert caught.value.response.status_code == 404
        error = await refused(h, "x" * 49)  # 2.0.1 identities are at most 48 characters
        assert error.response.status_code == 400
        assert h.gateway.stats.handshake_rejections == {"bad_path": 1, "bad_station_id": 1}


async def test_allow_unknown_stations_registers_them() -> None:
    async with asyncio.timeout(10), running_gateway(allow_unknown_stations=True) as h:
        async with h.station("NEWBIE", V201, register=False) as cs:
            assert h.directory.credential("NEWBIE")  # registered with the password it used
            assert h.fleet.stations["NEWBIE"].connected
            assert await cs.call(call201.Heartbeat()) is not None
        # from now on its password is checked
        error = await refused(h, "NEWBIE", V201, password="another-password-123")
        assert error.response.status_code == 401


async def test_known_station_without_password_and_auth_switch() -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("OPEN", password=None)
        async with h.connect("OPEN", password=None) as ws:
            assert ws.subprotocol == V16
    async with asyncio.timeout(10), running_gateway(require_auth=False) as h:
        h.directory.add("CP")
        async with h.connect("CP", password="not-the-password-at-all") as ws:
            assert ws.subprotocol == V16
        assert (await refused(h, "STRANGER")).response.status_code == 401


async def test_second_connection_replaces_the_first() -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        async with h.station("CP", V16) as first:
            old = h.gateway.sessions["CP"]
            async with h.station("CP", V16, boot=False) as second:
                ws = first._connection
                await ws.wait_closed()
                assert (ws.close_code, ws.close_reason) == (1000, "replaced by a new connection")
                await h.detached(old)  # the old socket's disconnect has been processed ...
                assert h.gateway.sessions["CP"] is not old
                assert h.of_type(StationDisconnected) == []  # ... and did not disconnect CP
                assert h.fleet.stations["CP"].connected
                assert len(h.of_type(StationConnected)) == 2
                h.assert_fleet(connected=1, charging=0, power_w=0.0)
                _, result = await h.round_trip(second, c.Reset(), "Reset")
                assert result.status == "Accepted"
                assert first.calls == []
                assert await second.call(call16.Heartbeat()) is not None
        await h.wait_for(lambda e: isinstance(e, StationDisconnected))
        h.assert_fleet(connected=0, charging=0, power_w=0.0)


async def test_reconnect_keeps_fleet_state_v16() -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        async with h.station("CP", V16) as cp:
            await cp.call(
                call16.StatusNotification(
                    connector_id=1, error_code="NoError", status="Charging", timestamp=ts()
                )
            )
            started = await cp.call(
                call16.StartTransaction(connector_id=1, id_tag="T", meter_start=0, timestamp=ts())
            )
            await cp.call(
                call16.MeterValues(
                    connector_id=1,
                    transaction_id=started.transaction_id,
                    meter_value=[
                        {
                            "timestamp": ts(),
                            "sampled_value": [
                                {"value": "7000", "measurand": "Power.Active.Import", "unit": "W"}
                            ],
                        }
                    ],
                )
            )
            h.assert_fleet(connected=1, charging=1, power_w=7000.0)
        await h.wait_for(lambda e: isinstance(e, StationDisconnected))
        h.assert_fleet(connected=0, charging=1, power_w=7000.0)

        async with h.station("CP", V16, boot=False) as cp:
            # booted before: no SecurityError without a new BootNotification
            assert await cp.call(call16.Heartbeat()) is not None
            evse = h.fleet.stations["CP"].evses[1]
            assert evse.transaction is not None
            assert evse.transaction.transaction_id == str(started.transaction_id)
            h.assert_fleet(connected=1, charging=1, power_w=7000.0)
            await cp.call(
                call16.StopTransaction(
                    meter_stop=5000, timestamp=ts(1), transaction_id=started.transaction_id
                )
            )
            assert evse.transaction is None
            h.assert_fleet(connected=1, charging=0, power_w=0.0)


async def test_reconnect_keeps_fleet_state_v201() -> None:
    def event(kind: str, seq: int, **extra: Any) -> Any:
        return call201.TransactionEvent(
            event_type=kind,
            timestamp=ts(seq),
            trigger_reason="Authorized",
            seq_no=seq,
            transaction_info={"transaction_id": "TX", **extra},
            evse={"id": 1},
        )

    async with asyncio.timeout(10), running_gateway() as h:
        async with h.station("CS", V201) as cs:
            await cs.call(event("Started", 0, charging_state="Charging"))
        await h.wait_for(lambda e: isinstance(e, StationDisconnected))
        h.assert_fleet(connected=0, charging=1, power_w=0.0)
        async with h.station("CS", V201, boot=False) as cs:
            await cs.call(event("Updated", 1))
            tx = h.fleet.stations["CS"].evses[1].transaction
            assert tx is not None and (tx.transaction_id, tx.last_seq_no) == ("TX", 1)
            h.assert_fleet(connected=1, charging=1, power_w=0.0)
