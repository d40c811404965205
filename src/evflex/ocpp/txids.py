"""A transaction id as it goes into a limit frame's JSON, remembered per protocol.

A transaction outlives many grid steps, and checking and converting its id was ~0.2 µs
of a station's ~0.7 µs splice (`evflex.ocpp.limits`). The adapters `remember` an id when
its transaction starts, so the first fleet-wide step that limits 10,000 of them does not
encode them on the latency path (~13 ms of it, measured). A pure function's results, so
never stale; bounded by clearing.
"""

from __future__ import annotations

import orjson

MAX_TX_ID_201 = 36  # 2.0.1 transactionId: identifierString, maxLength 36
TX16_JSON: dict[str | None, bytes] = {}
TX201_JSON: dict[str | None, bytes] = {}
MAX_REMEMBERED = 65_536  # transactions in flight across the fleet, with room to spare


def encode(tx_id: str | None, v16: bool) -> bytes | None:
    """`tx_id` as the adapters encode it (1.6: an integer), or None if it cannot be;
    remembered."""
    if tx_id is None:
        return None
    if v16:
        if not (tx_id.isascii() and tx_id.isdigit()):
            return None
        encoded = b"%d" % int(tx_id)
    elif len(tx_id) > MAX_TX_ID_201:
        return None
    else:
        encoded = orjson.dumps(tx_id)
    cache = TX16_JSON if v16 else TX201_JSON
    if len(cache) >= MAX_REMEMBERED:
        cache.clear()
    cache[tx_id] = encoded
    return encoded


def remember(tx_id: str, v16: bool) -> None:
    """A transaction started: its id's JSON, ready for the limits that will name it."""
    if tx_id not in (TX16_JSON if v16 else TX201_JSON):
        encode(tx_id, v16)
