"""Grid-limit frames spliced from validated templates (`Gateway.send_limits`).

A fleet-wide FCR step sends 10,000 SetChargingProfile calls that differ only in a
few numbers: EVSE, profile id, limit, transaction id. Planning, schema-validating
and encoding each one cost most of the ~140 µs per station a step used to take.
Here a batch builds, per shape (protocol, set/clear, purpose, unit, with/without
transaction), one payload through the ordinary path — `adapter.plan` of the
version-neutral command, then the official schema — with sentinel values in the
varying fields, encodes it once and turns the sentinels into format slots. A
station's frame is then one `%` format of that template.

What the schema check of the template does not cover is checked per order, where
it is cheap: ids are ints, the limit is finite (rounded as the adapter would),
an OCPP 1.6 transaction id is an integer, a 2.0.1 one at most 36 characters. An
order outside that gets `None` from `splice` (the gateway answers InvalidCommand),
never an unchecked frame. tests/ocpp/test_limits.py checks spliced frames against
the full schema and against the one-at-a-time encoding.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import orjson

from evflex.fleet.commands import (
    Command,
    CommandError,
    InvalidCommand,
    LimitBatch,
    LimitOrder,
    limit_command,
)
from evflex.ocpp import commands_v16, commands_v201, txids, v16, v201
from evflex.ocpp.errors import OcppError

Shape = tuple[bool, bool, str, str, bool]
"""(OCPP 1.6?, clear?, purpose, unit, with transaction id?); "" for what a clear ignores."""

# Sentinels: values no real field of these payloads takes (timestamps split their
# digits with '-', ':' and 'T'; stack levels and ids of the batch are small).
_PID, _EVSE, _LIMIT, _TX16, _TX201 = 1000000001, 1000000002, 1000000003.5, 1000000005, "1000000006"
_SLOT = {  # sentinel as encoded → (index into (number, evse, pid, limit, tx), format)
    b"1000000001": (2, b"%d"),
    b"1000000002": (1, b"%d"),
    b"1000000003.5": (3, b"%b"),
    b"1000000005": (4, b"%b"),
    b'"1000000006"': (4, b"%b"),
}
# the slots of a 1.6 SetChargingProfile frame with a transaction are already in that
# order: it is formatted from the values as they come, without picking
_IN_ORDER = [1, 2, 3, 4]
_SENTINELS = re.compile(b"|".join(re.escape(k) for k in sorted(_SLOT, key=len, reverse=True)))
_dumps = orjson.dumps


def plan_one_call(
    command: Command, v16_station: bool, what: str
) -> tuple[ModuleType, str, dict[str, Any]] | CommandError:
    """(adapter, action, payload) of a command that is one call, checked against the
    official schema once; shared by the limit templates and `Gateway.broadcast`."""
    adapter = commands_v16 if v16_station else commands_v201
    schemas = v16.SCHEMAS if v16_station else v201.SCHEMAS
    try:
        steps = adapter.plan(command)
    except CommandError as exc:
        return exc
    if len(steps) != 1:
        return CommandError(f"{what} must be a single call")
    action, payload = steps[0]
    try:
        schemas.validate_request(action, payload)
    except OcppError as exc:
        return InvalidCommand(f"{exc.code}: {exc.description}")
    return adapter, action, payload


def shape_of(order: LimitOrder, v16_station: bool) -> Shape:
    _, _, _, limit, unit, purpose, tx_id = order  # one unpack: cheaper than 4 attributes
    if limit is None:
        return (v16_station, True, "", "", False)
    return (v16_station, False, purpose, unit, tx_id is not None and purpose == "tx")


@dataclass(frozen=True, slots=True)
class Template:
    action: str
    fmt: bytes  # the encoded payload with a %-slot per varying field
    # (message number, evse, pid, limit, tx) → slot args
    pick: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    # the whole CALL, `[2,"<message id>","<action>",<payload>]`, with its slots: an
    # idle station's frame in one format, no payload bytes of its own in between
    frame_fmt: bytes
    frame_pick: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None  # None: as they come
    v16: bool
    clear: bool
    with_tx: bool
    txs_json: dict[str | None, bytes]  # txids.TX16_JSON or txids.TX201_JSON
    # limit → its JSON: a step sends few distinct limits (a full one: all 0.0)
    limits_json: dict[float, bytes] = field(default_factory=dict)

    def splice(self, order: LimitOrder, number: int | None = None) -> bytes | None:
        """The encoded payload for `order` — or, given a message `number`, the whole
        CALL frame — or None if its values are not ones the template's validation
        vouches for."""
        _, evse, pid, limit, _, _, tx_id = order  # one unpack: cheaper than 4 attributes
        if type(pid) is not int or type(evse) is not int:
            return None
        limit_json = b""
        tx: bytes | None = b""
        if not self.clear:
            if limit is None:
                return None
            # memoised only for floats other than -0.0: as dict keys 0 == 0.0 == -0.0,
            # but they encode differently
            memo = type(limit) is float and (limit or math.copysign(1.0, limit) > 0.0)
            known = self.limits_json.get(limit) if memo else None
            if known is not None:
                limit_json = known
            elif not math.isfinite(limit):
                return None
            else:
                # exactly what the adapters put in the period (1.6: multipleOf 0.1)
                limit_json = _dumps(round(limit, 1) if self.v16 else limit)
                if memo:
                    self.limits_json[limit] = limit_json
            if self.with_tx:
                known_tx = self.txs_json.get(tx_id)
                tx = known_tx if known_tx is not None else txids.encode(tx_id, self.v16)
                if tx is None:
                    return None
        if number is None:
            return self.fmt % self.pick((0, evse, pid, limit_json, tx))
        values = (number, evse, pid, limit_json, tx)
        pick = self.frame_pick
        return self.frame_fmt % (values if pick is None else pick(values))


def build(shape: Shape, batch: LimitBatch) -> Template | CommandError:
    """Plan, validate and encode one payload of `shape` with sentinels; make it a template."""
    v16_station, clear, purpose, unit, with_tx = shape
    tx: str | None = None
    if with_tx:
        tx = str(_TX16) if v16_station else _TX201
    sample = LimitOrder(
        "",
        _EVSE,
        _PID,
        None if clear else _LIMIT,
        "A" if unit == "A" else "W",
        "tx" if purpose == "tx" else "tx_default",
        tx,
    )
    planned = plan_one_call(limit_command(sample, batch), v16_station, "a limit")
    if isinstance(planned, CommandError):
        return planned
    _, action, payload = planned
    slots: list[int] = []

    def slot(match: re.Match[bytes]) -> bytes:
        index, fmt = _SLOT[match.group(0)]
        slots.append(index)
        return fmt

    fmt = _SENTINELS.sub(slot, _dumps(payload).replace(b"%", b"%%"))
    expected = {2} if clear else {1, 2, 3} | ({4} if with_tx else set())
    if set(slots) != expected:  # a sentinel lost or merged: never splice blindly
        return CommandError(f"{action} template has slots {slots}, expected {sorted(expected)}")
    getter = operator.itemgetter(*slots)  # C-speed picking: called once per station
    pick = getter if len(slots) > 1 else (lambda values: (getter(values),))
    frame_fmt = b'[2,"%%d","%b",%b]' % (action.encode(), fmt)
    return Template(
        action,
        fmt,
        pick,
        frame_fmt,
        None if slots == _IN_ORDER else operator.itemgetter(0, *slots),
        v16_station,
        clear,
        with_tx,
        txids.TX16_JSON if v16_station else txids.TX201_JSON,
    )
