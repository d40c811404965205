"""OCPP 1.6J frames for the load generator, built from pre-encoded byte pieces.

Serialising a dict per message would cost the loader more than the server spends
on it; a MeterValues frame here is one `bytes.join` of constant pieces plus the
message id, a timestamp shared by every send of a timer tick, and the energy
register.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

CALL, CALLRESULT, CALLERROR = 2, 3, 4
SUBPROTOCOL = "ocpp1.6"
POWER_W = 7400  # a single-phase 32 A charge: a plausible constant for every station

_MV_HEAD = b'","MeterValues",{"connectorId":1,"transactionId":'
_MV_TS = b',"meterValue":[{"timestamp":"'
_MV_POWER = b'","sampledValue":[{"value":"'
_MV_ENERGY = b'","measurand":"Power.Active.Import","unit":"W"},{"value":"'
_MV_TAIL = b'","measurand":"Energy.Active.Import.Register","unit":"Wh"}]}]}]'
_ACCEPTED = {"status": "Accepted"}


def timestamp() -> bytes:
    """Now as an OCPP (RFC 3339, UTC, milliseconds) timestamp."""
    text = datetime.now(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z").encode()


def call(message_id: str, action: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps([CALL, message_id, action, payload])


def boot_notification(message_id: str, index: int) -> bytes:
    return call(
        message_id,
        "BootNotification",
        {
            "chargePointVendor": "evflex-bench",
            "chargePointModel": "loadgen",
            "chargePointSerialNumber": f"SN{index:08d}",
            "firmwareVersion": "1.0",
        },
    )


def start_transaction(message_id: str, id_tag: str) -> bytes:
    return call(
        message_id,
        "StartTransaction",
        {
            "connectorId": 1,
            "idTag": id_tag,
            "meterStart": 0,
            "timestamp": timestamp().decode(),
        },
    )


def meter_values_prefix(transaction_id: int) -> bytes:
    """The station-specific part of its MeterValues frames (after the message id)."""
    return _MV_HEAD + str(transaction_id).encode() + _MV_TS


def meter_values(
    message_id: bytes, prefix: bytes, ts: bytes, energy_wh: int, power: bytes = b"7400"
) -> bytes:
    """`[2,"<id>","MeterValues",{... Power.Active.Import, Energy.Active.Import.Register}]`."""
    return b"".join(
        (b'[2,"', message_id, prefix, ts, _MV_POWER, power, _MV_ENERGY, b"%d" % energy_wh, _MV_TAIL)
    )


def accepted_result(message_id: str) -> bytes:
    """The CallResult a station sends for SetChargingProfile & co.: status Accepted."""
    # orjson rather than byte pieces: the id comes from the server and may need escaping.
    return orjson.dumps([CALLRESULT, message_id, _ACCEPTED])


def call_result(message_id: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps([CALLRESULT, message_id, payload])
