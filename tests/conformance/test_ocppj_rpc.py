"""OCPP-J RPC framework conformance (OCPP-J 1.6 §4, OCPP 2.0.1 Part 4 §4).

Requirement texts are quoted where the wording could be checked against a published copy
and marked "(paraphrased)" where it is reproduced from memory of the specification.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from harness import V16, V201, running_gateway

from evflex.fleet import commands as c

BOOT = {
    V16: {"chargePointVendor": "V", "chargePointModel": "M"},
    V201: {"chargingStation": {"vendorName": "V", "model": "M"}, "reason": "PowerUp"},
}


async def exchange(ws: websockets.ClientConnection, frame: Any) -> list[Any]:
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    reply: list[Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return reply


@pytest.mark.parametrize("version", [V16, V201])
async def test_at_most_one_outstanding_call(version: str) -> None:
    """OCPP-J 1.6 §4.1.1 / 2.0.1 Part 4 §4.1.1, synchronicity (paraphrased):

    "A Charge Point or Central System SHOULD NOT send a CALL message to the other party
    unless all the CALL messages it sent before have been responded to or have timed out."

    Three commands are queued while the station holds its first answer; it must see them
    one by one, in order, never two open at once.
    """
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", version) as cp:
        gates = [cp.hold(a) for a in ("Reset", "UnlockConnector", "ChangeAvailability")]
        sends = [
            asyncio.create_task(h.gateway.send("CP", cmd))
            for cmd in (c.Reset(), c.UnlockConnector(1), c.ChangeAvailability(True))
        ]
        for i, action in enumerate(("Reset", "UnlockConnector", "ChangeAvailability")):
            await cp.expect_call(action)
            assert len(cp.calls) == i + 1
            assert cp.outstanding == 1
            gates[i].set()
        await asyncio.gather(*sends)
        assert cp.max_outstanding == 1


@pytest.mark.parametrize("version", [V16, V201])
async def test_call_result_echoes_the_message_id(version: str) -> None:
    """OCPP-J 1.6 §4.2.2 / 2.0.1 Part 4 §4.2.2 (paraphrased): a CALLRESULT carries
    MessageTypeId 3 and "the exact same" MessageId as the CALL it answers; ids are
    strings of at most 36 characters chosen by the caller.
    """
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP")
        async with h.connect("CP", version) as ws:
            message_id = "0123456789abcdef-0123456789abcdef-ab"  # 36 characters
            reply = await exchange(ws, [2, message_id, "BootNotification", BOOT[version]])
            assert reply[:2] == [3, message_id]
            assert reply[2]["status"] == "Accepted"


@pytest.mark.parametrize(
    ("version", "code"), [(V16, "FormationViolation"), (V201, "FormatViolation")]
)
async def test_unparseable_message_gets_call_error_with_id_minus_one(
    version: str, code: str
) -> None:
    """OCPP 2.0.1 Part 4 §4.2.3 (paraphrased): when a message cannot be parsed and its
    MessageId therefore cannot be read, the CALLERROR carries MessageId "-1".

    OCPP-J 1.6 §4.2.3: FormationViolation, "Payload for Action is syntactically incorrect
    or not conform the PDU structure for Action"; 2.0.1 renames it FormatViolation.
    """
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP")
        async with h.connect("CP", version) as ws:
            reply = await exchange(ws, '[2, "abc", "Heartbeat", {')
            assert reply[:3] == [4, "-1", code]
            assert len(reply) == 5 and isinstance(reply[3], str) and isinstance(reply[4], dict)


ERROR_CODE_CASES = [
    # (case, frame, 1.6 code, 2.0.1 code) — descriptions from the OCPP-J 1.6 §4.2.3 table
    (
        "NotImplemented: Requested Action is not known by receiver",
        [2, "a", "Teleport", {}],
        "NotImplemented",
        "NotImplemented",
    ),
    (
        "NotSupported: Requested Action is recognized but not supported by the receiver",
        [2, "b", "GetLog", {}],
        "NotSupported",
        "NotSupported",
    ),
    (
        "ProtocolError: Payload for Action is incomplete",
        [2, "c", "Heartbeat"],
        "ProtocolError",
        "ProtocolError",
    ),
    (
        "MessageTypeNotSupported (2.0.1): unknown MessageTypeId",
        [6, "e", "Heartbeat", {}],
        "NotSupported",
        "MessageTypeNotSupported",
    ),
]


@pytest.mark.parametrize("version", [V16, V201])
async def test_call_error_codes(version: str) -> None:
    """OCPP-J 1.6 §4.2.3 / 2.0.1 Part 4 §4.3 CallError codes, each for the condition the
    specification gives it. "GetLog" is a CSMS→station action, so a station sending it is
    recognized but not supported.
    """
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP")
        async with h.connect("CP", version) as ws:
            await exchange(ws, [2, "boot", "BootNotification", BOOT[version]])
            for case, frame, code16, code201 in ERROR_CODE_CASES:
                expected = code16 if version == V16 else code201
                reply = await exchange(ws, frame)
                assert reply[:3] == [4, frame[1], expected], case
            bad_type = {"connectorId": "1", "errorCode": "NoError", "status": "Available"}
            if version == V201:
                bad_type = {
                    "timestamp": "2030-01-01T00:00:00Z",
                    "connectorStatus": "Available",
                    "evseId": "1",
                    "connectorId": 1,
                }
            # TypeConstraintViolation: "Payload for Action is syntactically correct but at
            # least one of the fields violates data type constraints (e.g. "somestring": 12)"
            reply = await exchange(ws, [2, "t", "StatusNotification", bad_type])
            assert reply[:3] == [4, "t", "TypeConstraintViolation"]


@pytest.mark.parametrize("version", [V16, V201])
async def test_call_error_is_never_sent_for_a_response(version: str) -> None:
    """OCPP-J (paraphrased): a CALLERROR is only a reply to a CALL. A CALLRESULT or
    CALLERROR whose MessageId matches no outstanding CALL (e.g. it arrived after the
    timeout) is dropped without a reply, and the connection stays open.
    """
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP")
        async with h.connect("CP", version) as ws:
            await exchange(ws, [2, "boot", "BootNotification", BOOT[version]])
            await ws.send(json.dumps([3, "stray", {}]))
            await ws.send(json.dumps([4, "stray2", "InternalError", "", {}]))
            assert (await exchange(ws, [2, "hb", "Heartbeat", {}]))[:2] == [3, "hb"]
            assert h.gateway.stats.unmatched_responses == 2
