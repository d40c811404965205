"""Malformed and unexpected frames: the right CALLERROR, the session stays up, and a second
station connected in parallel is not affected.

Bad frames cannot be built with the `ocpp` library, so the offending station talks raw
WebSocket; the bystander is a library station.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from harness import V16, V201, Harness, running_gateway
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from evflex.fleet import commands as c
from evflex.fleet.events import StationDisconnected

BOOT = {
    V16: {"chargePointVendor": "V", "chargePointModel": "M"},
    V201: {"chargingStation": {"vendorName": "V", "model": "M"}, "reason": "PowerUp"},
}
STATUS = {
    V16: {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
    V201: {
        "timestamp": "2030-01-01T00:00:00Z",
        "connectorStatus": "Available",
        "evseId": 1,
        "connectorId": 1,
    },
}


def spelled(version: str, code: str) -> str:
    """OCPP 1.6 spells two codes differently (and has no MessageTypeNotSupported)."""
    if version == V16:
        return {
            "FormatViolation": "FormationViolation",
            "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
            "MessageTypeNotSupported": "NotSupported",
        }.get(code, code)
    return code


async def exchange(ws: websockets.ClientConnection, frame: Any) -> list[Any]:
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert isinstance(reply, list)
    return reply


def with_status(version: str, **changes: Any) -> dict[str, Any]:
    payload = dict(STATUS[version])
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    return payload


def cases(version: str) -> list[tuple[str, Any, str, str]]:
    status_field = "status" if version == V16 else "connectorStatus"
    id_field = "connectorId" if version == V16 else "evseId"
    unhandled = "SignCertificate" if version == V16 else "ReservationStatusUpdate"
    return [
        ("not-json", "[2, 'x', oops", "-1", "FormatViolation"),
        ("not-a-list", '{"hello": 1}', "-1", "ProtocolError"),
        ("only-type", "[2]", "-1", "ProtocolError"),
        ("id-not-a-string", [2, 5, "Heartbeat", {}], "-1", "ProtocolError"),
        ("no-action", [2, "m1"], "m1", "ProtocolError"),
        ("no-payload", [2, "m2", "Heartbeat"], "m2", "ProtocolError"),
        ("id-too-long", [2, "x" * 37, "Heartbeat", {}], "x" * 37, "ProtocolError"),
        ("unknown-type", [7, "m4", "Heartbeat", {}], "m4", "MessageTypeNotSupported"),
        ("unknown-action", [2, "m5", "MakeCoffee", {}], "m5", "NotImplemented"),
        ("unhandled-action", [2, "m6", unhandled, {"csr": "x"}], "m6", "NotSupported"),
        (
            "type",
            [2, "m7", "StatusNotification", with_status(version, **{id_field: "one"})],
            "m7",
            "TypeConstraintViolation",
        ),
        (
            "enum",
            [2, "m8", "StatusNotification", with_status(version, **{status_field: "Bogus"})],
            "m8",
            "PropertyConstraintViolation",
        ),
        (
            "missing-required",
            [2, "m9", "StatusNotification", with_status(version, **{status_field: None})],
            "m9",
            "OccurrenceConstraintViolation",
        ),
    ]


async def check_bystander(h: Harness, bystander: Any, version: str) -> None:
    module = call16 if version == V16 else call201
    assert await bystander.call(module.Heartbeat()) is not None
    _, result = await h.round_trip(bystander, c.Reset(), "Reset")
    assert result.status == "Accepted"


@pytest.mark.parametrize("version", [V16, V201])
async def test_bad_frames_get_the_right_call_error(version: str) -> None:
    other = V201 if version == V16 else V16
    async with asyncio.timeout(15), running_gateway() as h:
        h.directory.add("BAD")
        async with h.station("GOOD", other) as bystander, h.connect("BAD", version) as ws:
            boot = await exchange(ws, [2, "boot", "BootNotification", BOOT[version]])
            assert boot[:2] == [3, "boot"]
            bystander_heartbeat = (call16 if other == V16 else call201).Heartbeat()
            for name, frame, expected_id, code in cases(version):
                reply = await exchange(ws, frame)
                assert len(reply) == 5, name
                assert reply[:3] == [4, expected_id, spelled(version, code)], name
                assert isinstance(reply[3], str) and isinstance(reply[4], dict), name
                # the session survives every one of them
                heartbeat = await exchange(ws, [2, f"hb-{name}", "Heartbeat", {}])
                assert heartbeat[:2] == [3, f"hb-{name}"], name
                assert set(heartbeat[2]) == {"currentTime"}, name
                # and the other station is served in between
                assert await bystander.call(bystander_heartbeat) is not None, name
            assert h.gateway.is_connected("BAD")
            await check_bystander(h, bystander, other)
            h.assert_fleet(connected=2, charging=0, power_w=0.0)
            sent = h.gateway.stats.call_errors
            assert sent[("sent", "ProtocolError")] == 6


@pytest.mark.parametrize("version", [V16, V201])
async def test_message_before_boot_is_security_error(version: str) -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("NEW")
        async with h.connect("NEW", version) as ws:
            for i, (action, payload) in enumerate(
                [("Heartbeat", {}), ("StatusNotification", STATUS[version])]
            ):
                reply = await exchange(ws, [2, f"early-{i}", action, payload])
                assert reply[:3] == [4, f"early-{i}", "SecurityError"]
            assert h.fleet.stations["NEW"].evses == {}  # nothing was applied
            assert (await exchange(ws, [2, "boot", "BootNotification", BOOT[version]]))[0] == 3
            assert (await exchange(ws, [2, "hb", "Heartbeat", {}]))[:2] == [3, "hb"]


@pytest.mark.parametrize("version", [V16, V201])
async def test_response_to_unknown_message_id_is_ignored(version: str) -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP")
        async with h.connect("CP", version) as ws:
            await exchange(ws, [2, "boot", "BootNotification", BOOT[version]])
            await ws.send(json.dumps([3, "never-sent", {"status": "Accepted"}]))
            await ws.send(json.dumps([4, "never-sent-2", "GenericError", "", {}]))
            # no reply to either: the next frame we get answers the heartbeat
            assert (await exchange(ws, [2, "hb", "Heartbeat", {}]))[:2] == [3, "hb"]
            assert h.gateway.stats.unmatched_responses == 2
            assert h.gateway.is_connected("CP")


async def test_oversized_frame_closes_that_connection_only() -> None:
    async with asyncio.timeout(10), running_gateway(max_message_bytes=4096) as h:
        h.directory.add("BIG")
        async with h.station("GOOD", V201) as bystander:
            async with h.connect("BIG", V16) as ws:
                await exchange(ws, [2, "boot", "BootNotification", BOOT[V16]])
                big = json.dumps([2, "big", "DataTransfer", {"vendorId": "x", "data": "y" * 5000}])
                await ws.send(big)
                with pytest.raises(websockets.ConnectionClosedError):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == 1009  # Message Too Big
            await h.wait_for(lambda e: e == StationDisconnected("BIG", getattr(e, "at", None)))
            assert not h.gateway.is_connected("BIG")
            await check_bystander(h, bystander, V201)
            # and the server still accepts the station again
            async with h.station("BIG", V16, boot=False) as again:
                assert await again.call(call16.Heartbeat()) is not None
                h.assert_fleet(connected=2, charging=0, power_w=0.0)


async def test_oversized_fragmented_message_closes_the_connection() -> None:
    async with asyncio.timeout(10), running_gateway(max_message_bytes=4096) as h:
        h.directory.add("FRAG")
        async with h.station("GOOD", V16) as bystander, h.connect("FRAG", V16) as ws:
            await exchange(ws, [2, "boot", "BootNotification", BOOT[V16]])
            # a fragmented message within the limit is reassembled and answered
            frame = json.dumps([2, "small", "DataTransfer", {"vendorId": "x", "data": "y" * 2000}])
            await ws.send([frame[:1000], frame[1000:2000], frame[2000:]])
            assert (await asyncio.wait_for(ws.recv(), 5)).startswith('[3,"small"')
            # every fragment fits, the message does not
            big = json.dumps([2, "big", "DataTransfer", {"vendorId": "x", "data": "y" * 9000}])
            await ws.send([big[i : i + 3000] for i in range(0, len(big), 3000)])
            with pytest.raises(websockets.ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1009
            await check_bystander(h, bystander, V16)
