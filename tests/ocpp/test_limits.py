"""Grid limits in batches: spliced frames, and `Gateway.send_limits` over real sockets.

A spliced frame must be exactly what the one-at-a-time path (plan → schema → encode)
would have sent, and valid against the official schema, for every shape and any
values an order can carry; orders the template cannot vouch for are refused.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from harness import V16, V201, running_gateway
from hypothesis import given, settings
from hypothesis import strategies as st

from evflex.fleet import commands as c
from evflex.fleet.commands import LimitBatch, LimitOrder, LimitOutcome, limit_command
from evflex.fleet.events import CommandCompleted
from evflex.ocpp import commands_v16, commands_v201, limits, txids, v16, v201

BATCH = LimitBatch(
    8, datetime(2026, 12, 4, 18, 0, tzinfo=UTC), datetime(2026, 12, 4, 18, 15, tzinfo=UTC)
)

batches = st.builds(
    LimitBatch,
    st.integers(0, 1000),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
)
limit_values = st.one_of(
    st.floats(-1e7, 1e7, allow_nan=False, allow_infinity=False),
    st.floats(-100.0, 100.0).map(lambda x: round(x, 1)),
    st.integers(-100_000, 100_000).map(float),
    st.just(0.0),
    st.just(-0.0),
)


def _orders(tx_ids: st.SearchStrategy[str | None]) -> st.SearchStrategy[LimitOrder]:
    return st.builds(
        LimitOrder,
        st.just("CP"),
        st.integers(0, 2**31),
        st.integers(0, 2**31),
        st.one_of(st.none(), limit_values),
        st.sampled_from(["W", "A"]),
        st.sampled_from(["tx", "tx_default"]),
        tx_ids,
    )


def _one_at_a_time(order: LimitOrder, batch: LimitBatch, v16_station: bool) -> tuple[str, Any]:
    adapter = commands_v16 if v16_station else commands_v201
    ((action, payload),) = adapter.plan(limit_command(order, batch))
    return action, payload


def _spliced(order: LimitOrder, batch: LimitBatch, v16_station: bool) -> tuple[str, bytes | None]:
    template = limits.build(limits.shape_of(order, v16_station), batch)
    assert isinstance(template, limits.Template), template
    return template.action, template.splice(order)


@settings(max_examples=300, deadline=None)
@given(_orders(st.one_of(st.none(), st.integers(0, 2**40).map(str))), batches)
def test_spliced_16_frames_are_the_validated_frames(order: LimitOrder, batch: LimitBatch) -> None:
    action, payload = _one_at_a_time(order, batch, True)
    spliced_action, spliced = _spliced(order, batch, True)
    assert spliced is not None and spliced_action == action
    assert spliced == orjson.dumps(payload)  # byte for byte what `send` would encode
    v16.SCHEMAS.validate_request(
        action, orjson.loads(spliced)
    )  # the full schema, not the fast path


@settings(max_examples=300, deadline=None)
@given(_orders(st.one_of(st.none(), st.text(max_size=36))), batches)
def test_spliced_201_frames_are_the_validated_frames(order: LimitOrder, batch: LimitBatch) -> None:
    action, payload = _one_at_a_time(order, batch, False)
    spliced_action, spliced = _spliced(order, batch, False)
    assert spliced is not None and spliced_action == action
    assert spliced == orjson.dumps(payload)
    v201.SCHEMAS.validate_request(action, orjson.loads(spliced))


@pytest.mark.parametrize("v16_station", [True, False])
def test_one_template_splices_many_orders_exactly(v16_station: bool) -> None:
    """A template is reused for a whole batch (and memoises limits): every frame is
    still exactly the one-at-a-time encoding, signed zero and ints included."""
    values = [0.0, -0.0, 0.0, 0, 1380.0, 1380, 1380.0, 7400.25, -3000.0, 7400.25, -0.0]
    orders = [LimitOrder("CP", e, 880_000 + e, v, "W", "tx", str(e)) for e, v in enumerate(values)]
    template = limits.build(limits.shape_of(orders[0], v16_station), BATCH)
    assert isinstance(template, limits.Template)
    for order in orders:
        assert template.splice(order) == orjson.dumps(_one_at_a_time(order, BATCH, v16_station)[1])


@pytest.mark.parametrize("v16_station", [True, False])
def test_transaction_ids_remembered_across_batches_stay_exact_and_bounded(
    v16_station: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transaction ids' JSON is kept from batch to batch, in a bounded memo: a
    remembered id, a forgotten one and one that cannot be vouched for all splice as
    the first time."""
    monkeypatch.setattr(txids, "MAX_REMEMBERED", 2)
    monkeypatch.setattr(txids, "TX16_JSON" if v16_station else "TX201_JSON", {})
    tx_ids = ["7", "007", "8", "7", "T-1", "007", "T-1"]
    for batch in (BATCH, LimitBatch(9, BATCH.start, BATCH.valid_to)):
        for tx_id in tx_ids:
            order = LimitOrder("CP", 1, 880_001, 0.0, "W", "tx", tx_id)
            expected = None
            if not v16_station or tx_id.isdigit():
                expected = orjson.dumps(_one_at_a_time(order, batch, v16_station)[1])
            assert _spliced(order, batch, v16_station)[1] == expected
    assert len(txids.TX16_JSON if v16_station else txids.TX201_JSON) <= 2


@pytest.mark.parametrize(
    ("order", "v16_station"),
    [
        (LimitOrder("CP", 1, 880_001, math.nan), True),
        (LimitOrder("CP", 1, 880_001, math.inf, "W", "tx", "7"), False),
        (LimitOrder("CP", 1, 880_001, 0.0, "W", "tx", "T-1"), True),  # 1.6 ids are integers
        (LimitOrder("CP", 1, 880_001, 0.0, "W", "tx", "x" * 37), False),  # 2.0.1: ≤ 36
        (LimitOrder("CP", 1.0, 880_001, 0.0), True),  # type: ignore[arg-type]
        (LimitOrder("CP", 1, True, None), False),  # type: ignore[arg-type]
    ],
)
def test_values_the_template_cannot_vouch_for_are_refused(
    order: LimitOrder, v16_station: bool
) -> None:
    assert _spliced(order, BATCH, v16_station)[1] is None


class Outcomes:
    """Collects `on_outcomes` hand-overs; `until` waits for orders' outcomes."""

    def __init__(self) -> None:
        self.batches: list[list[LimitOutcome]] = []
        self.changed = asyncio.Event()

    def __call__(self, outcomes: list[LimitOutcome]) -> None:
        self.batches.append(outcomes)
        self.changed.set()

    async def until(self, indexes: set[int]) -> None:
        while not indexes <= set(self.by_index()):
            self.changed.clear()
            await self.changed.wait()  # bounded by the test's asyncio.timeout

    def by_index(self) -> dict[int, tuple[str | None, str | None]]:
        return {
            i: (status, None if error is None else error.reason)
            for batch in self.batches
            for i, status, error in batch
        }


async def test_send_limits_reaches_every_station_in_one_pass_and_answers_per_order() -> None:
    async with (
        asyncio.timeout(10),
        running_gateway(call_timeout_s=30) as h,
        h.station("A", V16) as a,
        h.station("B", V201) as b,
        h.station("C", V16) as cs,
    ):
        b.status["SetChargingProfile"] = "Rejected"
        gates = [st.hold("SetChargingProfile") for st in (a, b)]
        gates.append(cs.hold("ClearChargingProfile"))
        orders = [
            LimitOrder("A", 1, 880_001, 0.0, "W", "tx", "42"),
            LimitOrder("B", 2, 880_002, 1380.5, "A", "tx_default"),
            LimitOrder("GHOST", 1, 880_001, 0.0),
            LimitOrder("C", 1, 880_001, None),
            LimitOrder("A", 1, 880_001, 0.0, "W", "tx", "not-a-number"),
        ]
        outcomes = Outcomes()
        done = h.gateway.send_limits(orders, BATCH, outcomes, timeout_s=5)
        # every station has its frame when the call returns, before any answer; the
        # station library checks each against the schema itself
        assert outcomes.batches == []
        frames = [await a.expect_call(), await b.expect_call(), await cs.expect_call()]
        assert [f[2] for f in frames] == [
            "SetChargingProfile",
            "SetChargingProfile",
            "ClearChargingProfile",
        ]
        assert frames[0][3] == commands_v16.plan(limit_command(orders[0], BATCH))[0][1]
        assert frames[1][3] == commands_v201.plan(limit_command(orders[1], BATCH))[0][1]
        assert frames[2][3] == {"id": 880_001}
        # the orders that cannot go are answered without waiting for the stations
        await outcomes.until({2, 4})
        assert outcomes.by_index() == {2: (None, "not_connected"), 4: (None, "invalid")}
        for gate in gates:
            gate.set()
        await done
        assert outcomes.by_index() == {
            0: ("Accepted", None),
            1: ("Rejected", None),
            2: (None, "not_connected"),
            3: ("Accepted", None),
            4: (None, "invalid"),
        }
        await asyncio.sleep(0)  # the command log follows the last answer
        logged = {e.station_id: e for e in h.of_type(CommandCompleted)}
        assert logged["B"].request == frames[1][3]  # decoded from the spliced frame
        assert logged["B"].response == {"status": "Rejected"}


async def test_a_busy_station_gets_its_limit_next_ahead_of_routine_calls() -> None:
    """One CALL in flight: the limit waits in the urgent lane, ahead of a routine call
    queued earlier, and its outcome comes in its own hand-over (no waiting for it)."""
    async with (
        asyncio.timeout(10),
        running_gateway(call_timeout_s=30) as h,
        h.station("A", V16) as a,
        h.station("BUSY", V201) as busy,
    ):
        gate = busy.hold("UnlockConnector")
        stuck = asyncio.create_task(h.gateway.send("BUSY", c.UnlockConnector(1)))
        await busy.expect_call("UnlockConnector")
        routine = asyncio.create_task(h.gateway.send("BUSY", c.Reset()))
        await asyncio.sleep(0)
        outcomes = Outcomes()
        done = h.gateway.send_limits(
            [LimitOrder("A", 1, 880_001, 0.0), LimitOrder("BUSY", 1, 880_001, 0.0)],
            BATCH,
            outcomes,
            timeout_s=5,
        )
        await a.expect_call("SetChargingProfile")
        await outcomes.until({0})  # A's answer is handed over while BUSY is still busy
        assert outcomes.by_index() == {0: ("Accepted", None)}
        gate.set()
        assert (await stuck).status == "Unlocked"
        assert (await busy.expect_call())[2] == "SetChargingProfile"  # before the Reset
        await done
        assert outcomes.by_index()[1] == ("Accepted", None)
        assert (await routine).status == "Accepted"
        assert [f[2] for f in busy.calls] == ["UnlockConnector", "SetChargingProfile", "Reset"]


async def test_send_limits_times_out_silent_stations_at_one_deadline() -> None:
    async with (
        asyncio.timeout(10),
        running_gateway(call_timeout_s=30) as h,
        h.station("A", V16) as a,
        h.station("SILENT", V16) as silent,
    ):
        silent.silent.add("SetChargingProfile")
        outcomes = Outcomes()
        started = asyncio.get_running_loop().time()
        await h.gateway.send_limits(
            [LimitOrder("A", 1, 880_001, 0.0), LimitOrder("SILENT", 1, 880_001, 0.0)],
            BATCH,
            outcomes,
            timeout_s=0.3,
        )
        assert 0.25 <= asyncio.get_running_loop().time() - started < 2.0
        assert outcomes.by_index() == {0: ("Accepted", None), 1: (None, "timeout")}
        assert [f[2] for f in a.calls] == ["SetChargingProfile"]
        silent.silent.clear()
        assert (await h.gateway.send("SILENT", c.Reset())).status == "Accepted"
