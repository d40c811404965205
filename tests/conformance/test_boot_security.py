"""Boot, heartbeat, subprotocol and security profile 1 conformance.

Requirement texts are quoted where the wording could be checked against a published copy
and marked "(paraphrased)" where they are reproduced from memory of the specification.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from harness import PASSWORD, V16, V201, running_gateway
from websockets.exceptions import InvalidStatus

BOOT = {
    V16: {"chargePointVendor": "V", "chargePointModel": "M"},
    V201: {"chargingStation": {"vendorName": "V", "model": "M"}, "reason": "PowerUp"},
}


@pytest.mark.parametrize("version", [V16, V201])
async def test_nothing_but_boot_before_boot(version: str) -> None:
    """OCPP 1.6 §4.2: "Between the physical power-on/reboot and the successful completion
    of a BootNotification, where Central System returns Accepted or Pending, the Charge
    Point SHALL NOT send any other request to the Central System."

    OCPP 2.0.1 B02/B03 (e.g. B03.FR.08, test case TC_B_30): a party that has not accepted
    the other answers its unexpected CALLs with CALLERROR SecurityError — "During the
    processing of Action a security issue occurred preventing receiver from completing
    the Action successfully" (OCPP-J 1.6 §4.2.3). evflex applies this to a station that
    has never booted.
    """
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("NEW")
        async with h.connect("NEW", version) as ws:
            await ws.send(json.dumps([2, "early", "Heartbeat", {}]))
            assert json.loads(await ws.recv())[:3] == [4, "early", "SecurityError"]
            await ws.send(json.dumps([2, "boot", "BootNotification", BOOT[version]]))
            assert json.loads(await ws.recv())[:2] == [3, "boot"]
            await ws.send(json.dumps([2, "late", "Heartbeat", {}]))
            assert json.loads(await ws.recv())[:2] == [3, "late"]


@pytest.mark.parametrize("version", [V16, V201])
async def test_a_booted_station_may_reconnect_without_booting(version: str) -> None:
    """OCPP 1.6 §4.2: "The Charge Point SHALL send a BootNotification.req PDU each time it
    boots or reboots." A new connection is not a reboot (paraphrased reading), so a
    station accepted before may go on after reconnecting.
    """
    async with asyncio.timeout(10), running_gateway() as h:
        async with h.station("CP", version):
            pass
        async with h.connect("CP", version) as ws:
            await ws.send(json.dumps([2, "hb", "Heartbeat", {}]))
            assert json.loads(await ws.recv())[:2] == [3, "hb"]


@pytest.mark.parametrize("version", [V16, V201])
async def test_boot_response_carries_interval_and_time(version: str) -> None:
    """OCPP 1.6 §4.2: "When the Central System responds with a BootNotification.conf with a
    status Accepted, the Charge Point will adjust the heartbeat interval in accordance
    with the interval from the response PDU and it is RECOMMENDED to synchronize its
    internal clock with the supplied Central System's current time."
    2.0.1 B01 (paraphrased): BootNotificationResponse has status, currentTime, interval.
    """
    async with asyncio.timeout(10), running_gateway(heartbeat_interval_s=90) as h:
        h.directory.add("CP")
        async with h.connect("CP", version) as ws:
            await ws.send(json.dumps([2, "boot", "BootNotification", BOOT[version]]))
            payload = json.loads(await ws.recv())[2]
            assert set(payload) == {"status", "currentTime", "interval"}
            assert (payload["status"], payload["interval"]) == ("Accepted", 90)
            current = datetime.fromisoformat(payload["currentTime"].replace("Z", "+00:00"))
            assert current.tzinfo is not None
            assert abs(current - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize("offered", [[V16, V201], [V201, V16]], ids=str)
async def test_server_selects_one_offered_subprotocol(offered: list[str]) -> None:
    """OCPP-J 1.6 §3.1.2 / 2.0.1 Part 4 §3.1.2 (paraphrased): the station lists the OCPP
    versions it supports in Sec-WebSocket-Protocol; the CSMS selects one and returns it
    in the Sec-WebSocket-Protocol header of its 101 response. evflex prefers the newest.
    """
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP")
        async with h.connect("CP", offered) as ws:
            assert ws.response is not None
            assert ws.response.headers["Sec-WebSocket-Protocol"] == V201


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("version", [V16, V201])
async def test_security_profile_1_basic_auth(version: str) -> None:
    """OCPP 2.0.1 A00 / OCPP 1.6 security white paper, security profile 1 (paraphrased):
    the station authenticates with HTTP Basic authentication, the username SHALL be the
    Charging Station's identity and the password its BasicAuthPassword; the CSMS refuses
    the connection otherwise (HTTP 401).
    """
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP-1")
        async with h.connect("CP-1", version, authorization=_basic("CP-1", PASSWORD)) as ws:
            assert ws.subprotocol == version
        for header in (_basic("CP-2", PASSWORD), _basic("CP-1", PASSWORD + "x"), None):
            with pytest.raises(InvalidStatus) as caught:
                if header is None:
                    async with h.connect("CP-1", version, password=None):
                        pass
                else:
                    async with h.connect("CP-1", version, authorization=header):
                        pass
            assert caught.value.response.status_code == 401
        assert h.gateway.stats.handshake_rejections["bad_credentials"] == 3
