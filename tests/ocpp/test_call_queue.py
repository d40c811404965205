"""CSMS→station calls: CALLERROR, timeouts, one call in flight, priority, broadcast, command log."""

from __future__ import annotations

import asyncio
import gc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import V16, V201, Station16, running_gateway
from ocpp.exceptions import GenericError, NotSupportedError
from ocpp.routing import on
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import call as call201

from evflex.fleet import commands as c
from evflex.fleet.events import CommandCompleted
from evflex.ocpp.session import CallGroup, Outgoing, group_call


def heartbeat(version: str) -> Any:
    return call16.Heartbeat() if version == V16 else call201.Heartbeat()


@pytest.mark.parametrize("version", [V16, V201])
async def test_call_error_is_command_rejected_and_logged(version: str) -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", version) as cp:
        cp.fail["Reset"] = GenericError(description="relay stuck", details={"relay": 2})
        with pytest.raises(c.CommandRejected) as caught:
            await h.gateway.send("CP", c.Reset("hard"))
        assert (caught.value.code, caught.value.description) == ("GenericError", "relay stuck")
        assert caught.value.details == {"relay": 2}
        assert caught.value.reason == "call_error"
        (logged,) = h.of_type(CommandCompleted)
        assert (logged.action, logged.outcome, logged.response) == ("Reset", "error", None)
        assert logged.error == "GenericError: relay stuck"
        assert h.gateway.stats.call_errors[("received", "GenericError")] == 1
        # the session is fine afterwards
        del cp.fail["Reset"]
        _, result = await h.round_trip(cp, c.Reset("hard"), "Reset")
        assert result.status == "Accepted"


class InvalidAnswerStation(Station16):
    @on("Reset", skip_schema_validation=True)
    async def on_reset(self, **kw: Any) -> Any:
        return result16.Reset(status="Perhaps")


async def test_schema_invalid_answer_is_command_rejected() -> None:
    async with (
        asyncio.timeout(10),
        running_gateway() as h,
        h.station("CP", V16, station_class=InvalidAnswerStation) as cp,
    ):
        with pytest.raises(c.CommandRejected) as caught:
            await h.gateway.send("CP", c.Reset())
        assert caught.value.code == "PropertyConstraintViolation"
        (logged,) = h.of_type(CommandCompleted)
        assert logged.outcome == "error"
        assert logged.error is not None and logged.error.startswith("PropertyConstraintViolation")
        assert await cp.call(call16.Heartbeat()) is not None


@pytest.mark.parametrize("version", [V16, V201])
async def test_unanswered_call_times_out_then_next_queued_call_is_sent(version: str) -> None:
    async with (
        asyncio.timeout(10),
        running_gateway(call_timeout_s=0.3) as h,
        h.station("CP", version) as cp,
    ):
        late = cp.hold("Reset")
        stuck = asyncio.create_task(h.gateway.send("CP", c.Reset("hard")))
        # its own deadline is longer: time in the queue counts against it
        queued = asyncio.create_task(h.gateway.send("CP", c.UnlockConnector(1), timeout_s=5))
        first = await cp.expect_call("Reset")
        assert h.gateway.sessions["CP"].queued == 2
        with pytest.raises(c.CommandTimeout):
            await stuck
        await cp.expect_call("UnlockConnector")
        assert (await queued).status == "Unlocked"
        outcomes = [(e.action, e.outcome) for e in h.of_type(CommandCompleted)]
        assert outcomes == [("Reset", "timeout"), ("UnlockConnector", "result")]
        timed_out = h.of_type(CommandCompleted)[0]
        assert timed_out.error == "no response within 0.3 s"
        assert timed_out.duration_ms >= 250.0  # the timer really waited (clocks differ slightly)
        assert h.gateway.stats.command_timeouts == 1

        # The late answer to the timed-out call is ignored: no reply, session intact.
        frames_before = len(cp.frames)
        late.set()
        await cp.answered(first[1])
        assert await cp.call(heartbeat(version)) is not None  # processed after the late answer
        assert h.gateway.stats.unmatched_responses == 1
        assert [f[0] for f in cp.frames[frames_before:]] == [3]  # only the heartbeat result
        assert first[1] not in {f[1] for f in cp.frames[frames_before:]}
        assert len(h.of_type(CommandCompleted)) == 2


async def test_per_call_timeout_overrides_the_default() -> None:
    async with (
        asyncio.timeout(10),
        running_gateway(call_timeout_s=30) as h,
        h.station("CP", V201) as cp,
    ):
        cp.silent.add("Reset")
        with pytest.raises(c.CommandTimeout):
            await h.gateway.send("CP", c.Reset(), timeout_s=0.2)
        assert h.of_type(CommandCompleted)[0].error == "no response within 0.2 s"


@pytest.mark.parametrize("version", [V16, V201])
async def test_one_call_in_flight_in_order_while_station_calls_are_answered(version: str) -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", version) as cp:
        gates = {a: cp.hold(a) for a in ("Reset", "UnlockConnector", "TriggerMessage")}
        commands = [c.Reset(), c.UnlockConnector(1), c.TriggerMessage("Heartbeat")]
        tasks = [asyncio.create_task(h.gateway.send("CP", cmd)) for cmd in commands]
        await cp.expect_call("Reset")
        assert h.gateway.sessions["CP"].queued == 3
        for action in ("Reset", "UnlockConnector", "TriggerMessage"):
            if action != "Reset":
                await cp.expect_call(action)
            # While our call is pending, the station's own calls are answered ...
            assert await cp.call(heartbeat(version)) is not None
            # ... and no second CALL has been sent: the answer above came after it would have.
            assert [f[2] for f in cp.calls] == list(gates)[: len(cp.calls)]
            assert cp.outstanding == 1
            assert not tasks[len(cp.calls) - 1].done()
            gates[action].set()
        results = await asyncio.gather(*tasks)
        assert [r.status for r in results] == ["Accepted", "Unlocked", "Accepted"]
        assert cp.max_outstanding == 1
        assert [f[2] for f in cp.calls] == ["Reset", "UnlockConnector", "TriggerMessage"]
        assert len({f[1] for f in cp.calls}) == 3  # unique message ids


async def test_priority_call_jumps_ahead_of_queued_routine_calls() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V201) as cp:
        gate = cp.hold("Reset")
        limit = c.SetChargingProfile(
            0, c.ChargingProfile(1, 0, "station_max", "W", (c.SchedulePeriod(0, 10000),))
        )
        tasks = [
            asyncio.create_task(h.gateway.send("CP", c.Reset())),
            asyncio.create_task(h.gateway.send("CP", c.UnlockConnector(1))),
            asyncio.create_task(h.gateway.send("CP", c.TriggerMessage("Heartbeat"))),
            asyncio.create_task(h.gateway.send("CP", limit, priority=True)),
        ]
        await cp.expect_call("Reset")
        assert h.gateway.sessions["CP"].queued == 4  # all queued behind the held Reset
        gate.set()
        await asyncio.gather(*tasks)
        assert [f[2] for f in cp.calls] == [
            "Reset",
            "SetChargingProfile",
            "UnlockConnector",
            "TriggerMessage",
        ]
        assert cp.max_outstanding == 1


async def test_invalid_queued_call_is_skipped_and_the_queue_goes_on() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        gate = cp.hold("Reset")
        first = asyncio.create_task(h.gateway.send("CP", c.Reset()))
        await cp.expect_call("Reset")
        bad = asyncio.create_task(
            h.gateway.send("CP", c.SetVariables((c.VariableSet("K" * 51, "v"),)))
        )
        after = asyncio.create_task(h.gateway.send("CP", c.UnlockConnector(1)))
        gate.set()
        assert (await first).status == "Accepted"
        with pytest.raises(c.InvalidCommand):
            await bad
        assert (await after).status == "Unlocked"
        assert [f[2] for f in cp.calls] == ["Reset", "UnlockConnector"]


async def test_disconnect_fails_pending_and_queued_calls() -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        async with h.station("CP", V16) as cp:
            cp.silent.add("Reset")
            pending = asyncio.create_task(h.gateway.send("CP", c.Reset()))
            queued = asyncio.create_task(h.gateway.send("CP", c.UnlockConnector(1)))
            await cp.expect_call("Reset")
        for task in (pending, queued):
            with pytest.raises(c.StationNotConnected):
                await task
        with pytest.raises(c.StationNotConnected):
            await h.gateway.send("CP", c.Reset())


async def test_call_in_flight_at_disconnect_is_logged_not_connected() -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        async with h.station("CP", V16) as cp:
            cp.silent.add("Reset")
            pending = asyncio.create_task(h.gateway.send("CP", c.Reset()))
            await cp.expect_call("Reset")
        with pytest.raises(c.StationNotConnected):
            await pending
        assert [(e.action, e.outcome) for e in h.of_type(CommandCompleted)] == [
            ("Reset", "not_connected")
        ]


async def test_answer_after_caller_gave_up_keeps_session_alive() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V16) as cp:
        gate = cp.hold("Reset")
        caller = asyncio.create_task(h.gateway.send("CP", c.Reset()))
        frame = await cp.expect_call("Reset")
        caller.cancel()  # e.g. the API request that wanted it was aborted
        with pytest.raises(asyncio.CancelledError):
            await caller
        gate.set()
        await cp.answered(frame[1])
        result = await h.gateway.send("CP", c.UnlockConnector(1))
        assert result.status == "Unlocked"
        assert h.gateway.is_connected("CP")


async def test_broadcast_to_several_stations() -> None:
    async with asyncio.timeout(10), running_gateway() as h:
        async with (
            h.station("A", V16) as a,
            h.station("B", V16) as b,
            h.station("C", V201) as cs,
        ):
            gates = [st.hold("Reset") for st in (a, b, cs)]
            b.status["Reset"] = "Rejected"
            cs.fail["Reset"] = NotSupportedError(description="no")
            task = asyncio.create_task(
                h.gateway.broadcast(["A", "B", "C", "GHOST"], c.Reset("hard"))
            )
            # every station has its frame while all answers are still held back
            frames = [await st.expect_call("Reset") for st in (a, b, cs)]
            assert [f[3] for f in frames] == [
                {"type": "Hard"},
                {"type": "Hard"},
                {"type": "Immediate"},
            ]
            for gate in gates:
                gate.set()
            results = await task
        assert set(results) == {"A", "B", "C", "GHOST"}
        assert isinstance(results["A"], c.CommandResult) and results["A"].status == "Accepted"
        assert isinstance(results["B"], c.CommandResult) and results["B"].status == "Rejected"
        assert isinstance(results["C"], c.CommandRejected) and results["C"].code == "NotSupported"
        assert isinstance(results["GHOST"], c.StationNotConnected)
        outcomes = sorted((e.station_id, e.outcome) for e in h.of_type(CommandCompleted))
        assert outcomes == [("A", "result"), ("B", "result"), ("C", "error")]


async def test_broadcast_deadline_times_out_silent_and_queued_stations() -> None:
    """One deadline for the whole broadcast, queueing included: a station that never
    answers and one whose call waits behind a stuck call both time out at it; the
    others answer; every session is usable afterwards."""
    async with (
        asyncio.timeout(10),
        running_gateway(call_timeout_s=30) as h,
        h.station("A", V16) as a,
        h.station("SILENT", V16) as silent,
        h.station("BUSY", V201) as busy,
    ):
        silent.silent.add("Reset")
        busy.silent.add("UnlockConnector")
        stuck = asyncio.create_task(h.gateway.send("BUSY", c.UnlockConnector(1)))
        await busy.expect_call("UnlockConnector")
        started = asyncio.get_running_loop().time()
        results = await h.gateway.broadcast(["A", "SILENT", "BUSY", "A"], c.Reset(), timeout_s=0.3)
        waited = asyncio.get_running_loop().time() - started
        assert 0.25 <= waited < 2.0
        assert set(results) == {"A", "SILENT", "BUSY"}
        assert isinstance(results["A"], c.CommandResult)
        assert results["A"].status == "Accepted"
        assert isinstance(results["SILENT"], c.CommandTimeout)
        assert isinstance(results["BUSY"], c.CommandTimeout)
        assert "queued" in str(results["BUSY"])
        assert [f[2] for f in a.calls] == ["Reset"]  # listed twice, called once
        assert h.gateway.stats.command_timeouts == 1  # the one really sent
        await asyncio.sleep(0)  # a broadcast's command log follows right after its answers
        logged = sorted((e.station_id, e.outcome) for e in h.of_type(CommandCompleted))
        assert logged == [("A", "result"), ("SILENT", "timeout")]
        # the silent station's queue moved on; the busy one never got the Reset
        silent.silent.clear()
        assert (await h.gateway.send("SILENT", c.Reset())).status == "Accepted"
        stuck.cancel()
        assert [f[2] for f in busy.calls] == ["UnlockConnector"]


async def test_a_cancelled_broadcast_still_times_out_its_calls_in_flight() -> None:
    async with (
        asyncio.timeout(10),
        running_gateway(call_timeout_s=30) as h,
        h.station("A", V16) as a,
    ):
        a.silent.add("Reset")
        task = asyncio.create_task(h.gateway.broadcast(["A"], c.Reset(), timeout_s=0.3))
        await a.expect_call("Reset")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the call in flight is not left blocking the station's queue forever
        a.silent.clear()
        result = await h.gateway.send("A", c.UnlockConnector(1), timeout_s=5)
        assert result.status == "Unlocked"
        assert [(e.action, e.outcome) for e in h.of_type(CommandCompleted)] == [
            ("Reset", "timeout"),
            ("UnlockConnector", "result"),
        ]


async def test_broadcast_refuses_multi_step_commands_per_station() -> None:
    async with (
        asyncio.timeout(10),
        running_gateway() as h,
        h.station("A", V16) as a,
        h.station("C", V201) as cs,
    ):
        command = c.SetVariables(
            (c.VariableSet("X", "1", "Ctrlr"), c.VariableSet("Y", "2", "Ctrlr"))
        )
        results = await h.gateway.broadcast(["A", "C"], command)
        assert type(results["A"]) is c.CommandError  # 1.6 would need two calls
        assert isinstance(results["C"], c.CommandResult)
        assert results["C"].status == "Accepted"
        assert a.calls == [] and [f[2] for f in cs.calls] == ["SetVariables"]


async def test_broadcast_reports_an_inexpressible_command_per_station() -> None:
    async with (
        asyncio.timeout(10),
        running_gateway() as h,
        h.station("A", V16),
        h.station("C", V201),
    ):
        results = await h.gateway.broadcast(["C", "A"], c.StopTransaction("TX-7"))
        assert isinstance(results["A"], c.InvalidCommand)
        assert isinstance(results["C"], c.CommandResult)


async def test_command_log_records_the_exchange() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("CP", V201) as cp:
        before = datetime.now(UTC)
        (payload,), result = await h.round_trip(
            cp, c.GetCompositeSchedule(1, 60), "GetCompositeSchedule"
        )
        (logged,) = h.of_type(CommandCompleted)
        assert logged.station_id == "CP"
        assert (logged.action, logged.request, logged.outcome) == (
            "GetCompositeSchedule",
            payload,
            "result",
        )
        assert (logged.response, logged.error) == (result.response, None)
        assert 0.0 <= logged.duration_ms <= result.duration_ms
        # sent_at is when the CALL went out: after `before`, give or take clock granularity
        assert before - timedelta(milliseconds=5) <= logged.sent_at <= datetime.now(UTC)


@pytest.mark.parametrize("version", [V16, V201])
async def test_time_waiting_in_the_queue_counts_against_the_timeout(version: str) -> None:
    """A REST caller's timeout bounds the whole wait, not just the time on the wire."""
    async with (
        asyncio.timeout(10),
        running_gateway(call_timeout_s=5) as h,
        h.station("CP", version) as cp,
    ):
        cp.hold("Reset")
        blocker = asyncio.create_task(h.gateway.send("CP", c.Reset("hard")))
        await cp.expect_call("Reset")
        started = asyncio.get_running_loop().time()
        with pytest.raises(c.CommandTimeout, match="queue included"):
            await h.gateway.send("CP", c.UnlockConnector(1), timeout_s=0.3)
        assert asyncio.get_running_loop().time() - started < 2.0
        assert h.gateway.sessions["CP"].queued == 1  # the abandoned call left the queue
        blocker.cancel()


async def test_broadcast_holds_off_the_cyclic_gc_only_while_it_runs() -> None:
    async with asyncio.timeout(10), running_gateway() as h, h.station("A", V16) as a:
        assert gc.isenabled()
        gate = a.hold("Reset")
        task = asyncio.create_task(h.gateway.broadcast(["A"], c.Reset()))
        await a.expect_call("Reset")
        assert not gc.isenabled()  # no collection pause between the sends and the answers
        gate.set()
        await task
        assert gc.isenabled()
        gc.disable()  # someone else's choice is left alone
        try:
            await h.gateway.broadcast(["A"], c.Reset())
            assert not gc.isenabled()
        finally:
            gc.enable()


async def test_group_call_is_the_outgoing_its_constructor_makes() -> None:
    """`group_call` sets every slot itself (for speed): a field added to `Outgoing`
    must be set there too, or this comparison fails."""
    group = CallGroup(asyncio.get_running_loop())
    made = group_call("SetChargingProfile", 5.0, group, 7)
    assert made == Outgoing("SetChargingProfile", None, None, 5.0, group=group, key=7)
