"""Transaction conformance for OCPP 1.6 StartTransaction/StopTransaction and 2.0.1
TransactionEvent, checked on the raw frames the CSMS writes.

Requirement texts are paraphrased from the specifications (field descriptions of the
message definitions) unless marked as quotes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from harness import V16, V201, running_gateway

BOOT16 = {"chargePointVendor": "V", "chargePointModel": "M"}
BOOT201 = {"chargingStation": {"vendorName": "V", "model": "M"}, "reason": "PowerUp"}


async def call(ws: websockets.ClientConnection, message_id: str, action: str, payload: Any) -> Any:
    await ws.send(json.dumps([2, message_id, action, payload]))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply[:2] == [3, message_id], reply
    return reply[2]


def tx_event(kind: str, seq: int, token: str | None = None, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "eventType": kind,
        "timestamp": f"2030-01-01T00:00:{seq:02d}Z",
        "triggerReason": "Authorized",
        "seqNo": seq,
        "transactionInfo": {"transactionId": "TX-1"},
        "evse": {"id": 1, "connectorId": 1},
        **extra,
    }
    if token is not None:
        payload["idToken"] = {"idToken": token, "type": "ISO14443"}
    return payload


@pytest.mark.parametrize(("token", "status"), [("TAG", "Accepted"), ("BLOCKED", "Blocked")])
async def test_v201_id_token_info_when_id_token_present(token: str, status: str) -> None:
    """OCPP 2.0.1 E01/E03/C01 (paraphrased): TransactionEventResponse.idTokenInfo "SHALL be
    sent when the idToken field was present in the TransactionEventRequest"; it carries
    the authorization status of that token.
    """
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CS")
        async with h.connect("CS", V201) as ws:
            await call(ws, "b", "BootNotification", BOOT201)
            started = await call(ws, "s", "TransactionEvent", tx_event("Started", 0, token))
            assert started == {"idTokenInfo": {"status": status}}
            updated = await call(ws, "u", "TransactionEvent", tx_event("Updated", 1))
            assert "idTokenInfo" not in updated
            ended = await call(ws, "e", "TransactionEvent", tx_event("Ended", 2, token))
            assert ended["idTokenInfo"]["status"] == status


async def test_v16_start_transaction_returns_integer_id_and_id_tag_info() -> None:
    """OCPP 1.6 §4.8 / §6.46 (paraphrased): the Central System SHALL answer
    StartTransaction.req with a StartTransaction.conf holding idTagInfo and a
    transactionId, an integer that identifies the transaction; StopTransaction.conf
    holds idTagInfo when the request carried an idTag.
    """
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CP")
        async with h.connect("CP", V16) as ws:
            await call(ws, "b", "BootNotification", BOOT16)
            ids = []
            for i, tag in enumerate(("A", "BLOCKED")):
                conf = await call(
                    ws,
                    f"s{i}",
                    "StartTransaction",
                    {
                        "connectorId": i + 1,
                        "idTag": tag,
                        "meterStart": 0,
                        "timestamp": "2030-01-01T00:00:00Z",
                    },
                )
                assert set(conf) == {"transactionId", "idTagInfo"}
                assert type(conf["transactionId"]) is int
                ids.append(conf["transactionId"])
            assert conf["idTagInfo"] == {"status": "Blocked"}
            assert len(set(ids)) == 2
            stop = {"meterStop": 10, "timestamp": "2030-01-01T01:00:00Z", "transactionId": ids[0]}
            assert await call(ws, "x0", "StopTransaction", stop) == {}
            conf = await call(
                ws, "x1", "StopTransaction", {**stop, "transactionId": ids[1], "idTag": "A"}
            )
            assert conf == {"idTagInfo": {"status": "Accepted"}}


async def test_v201_seq_no_detects_lost_events() -> None:
    """OCPP 2.0.1 TransactionEventRequest.seqNo (paraphrased): "incremental sequence number,
    helps with determining if all messages of a transaction have been received".
    """
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CS")
        async with h.connect("CS", V201) as ws:
            await call(ws, "b", "BootNotification", BOOT201)
            for seq in (0, 1, 3, 6):
                await call(
                    ws,
                    f"t{seq}",
                    "TransactionEvent",
                    tx_event("Started" if seq == 0 else "Updated", seq),
                )
            tx = h.fleet.stations["CS"].evses[1].transaction
            assert tx is not None and tx.seq_gaps == 3  # 2, 4 and 5 are missing


async def test_v201_offline_events_are_history() -> None:
    """OCPP 2.0.1 TransactionEventRequest.offline (paraphrased): "indication that this
    transaction event happened when the Charging Station was offline". Such events are
    delivered late; they must not replace newer live measurements.
    """
    power = {"measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}}
    async with asyncio.timeout(10), running_gateway() as h:
        h.directory.add("CS")
        async with h.connect("CS", V201) as ws:
            await call(ws, "b", "BootNotification", BOOT201)
            live = tx_event("Started", 0)
            live["meterValue"] = [
                {"timestamp": "2030-01-01T00:10:00Z", "sampledValue": [{**power, "value": 7000}]}
            ]
            await call(ws, "live", "TransactionEvent", live)
            old = tx_event("Updated", 1, offline=True)
            old["meterValue"] = [
                {"timestamp": "2030-01-01T00:05:00Z", "sampledValue": [{**power, "value": 1000}]}
            ]
            await call(ws, "old", "TransactionEvent", old)
            evse = h.fleet.stations["CS"].evses[1]
            assert evse.power_w == 7000.0
            assert evse.transaction is not None and evse.transaction.offline_events == 1
