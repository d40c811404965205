"""The engine loop with a fake command port: idempotence, dispatch, expiry, safety."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from evflex.control.loop import Fcr
from evflex.control.services import Setpoint
from evflex.fleet.commands import ClearChargingProfile, SetChargingProfile
from tests.control.engine_helpers import Clocks, FakePort, engine_for, feed


async def test_full_activation_sends_one_pass_then_nothing_on_reevaluation() -> None:
    port, clocks = FakePort(), Clocks()
    engine = engine_for(10, port, clocks, tx_every=2)
    engine.activate("fcr", Fcr(35_000.0))
    feed(engine, clocks, 49.8)
    await asyncio.sleep(0)  # let the dispatch tasks run up to their first await
    # every station's command was handed to the port before any answer came back
    assert len(port.sent) == 5 and port.answered == 0
    assert all(priority for _, _, priority in port.sent)
    port.release.set()
    await engine.drain()
    feed(engine, clocks, 49.8)
    engine.tick()
    await engine.drain()
    assert len(port.sent) == 5  # same state: nothing new
    assert sum(engine.limits.values()) == 0.0  # five 7 kW units paused = 35 kW


async def test_profile_is_tx_with_the_transaction_else_tx_default_and_always_expires() -> None:
    port, clocks = FakePort(), Clocks()
    port.release.set()
    engine = engine_for(2, port, clocks, stack_level=50, valid_for_s=600.0)
    engine.activate("fcr", Fcr(14_000.0))
    # S1's transaction ends after the plan counted it as a unit and before its limit is
    # built (sending is synchronous with the evaluation since limits go out in one
    # batch): its limit becomes the default
    engine.fleet.stations["S1"].evses[1].transaction = None
    feed(engine, clocks, 49.8)
    await engine.drain()
    by_station = {sid: cmd for sid, cmd, _ in port.sent}
    tx, no_tx = by_station["S0"], by_station["S1"]
    assert isinstance(tx, SetChargingProfile) and isinstance(no_tx, SetChargingProfile)
    assert (tx.profile.purpose, tx.profile.transaction_id) == ("tx", "S0-1")
    assert (no_tx.profile.purpose, no_tx.profile.transaction_id) == ("tx_default", None)
    for cmd in (tx, no_tx):
        assert cmd.profile.unit == "W" and cmd.profile.stack_level == 50
        assert cmd.profile.valid_to is not None
        assert cmd.profile.valid_to - clocks.wall <= timedelta(seconds=600)


async def test_limits_are_renewed_before_they_expire() -> None:
    port, clocks = FakePort(), Clocks()
    port.release.set()
    engine = engine_for(1, port, clocks, valid_for_s=600.0, renew_before_s=200.0)
    engine.activate("fcr", Fcr(7_000.0))
    feed(engine, clocks, 49.8)
    await engine.drain()
    assert len(port.sent) == 1
    for _ in range(5):  # keep the feed alive while 401 s pass
        clocks.advance(80.2)
        feed(engine, clocks, 49.8, 1)
        engine.tick()
    await engine.drain()
    renewals = [a for a in engine.audit if a.action == "renew"]
    assert len(renewals) == 1 and renewals[0].limit_w == 0.0


async def test_stale_feed_releases_the_limits() -> None:
    port, clocks = FakePort(), Clocks()
    port.release.set()
    engine = engine_for(2, port, clocks)
    engine.activate("fcr", Fcr(7_000.0))
    feed(engine, clocks, 49.8)
    await engine.drain()
    assert engine.limits
    clocks.advance(3.5)
    engine.tick()
    await engine.drain()
    assert engine.limits == {}
    assert isinstance(port.sent[-1][1], ClearChargingProfile)
    assert "stale" in engine.audit[-1].reason


async def test_failed_limits_back_off_instead_of_hammering_the_station() -> None:
    port, clocks = FakePort(status="Faulted"), Clocks()  # an answer that is no verdict
    port.release.set()
    engine = engine_for(2, port, clocks, retry_after_s=10.0)
    engine.activate("fcr", Fcr(7_000.0))
    feed(engine, clocks, 49.8)
    await engine.drain()
    assert engine.limits == {}  # not accepted: not believed in force
    first = len(port.sent)
    feed(engine, clocks, 49.8)
    await engine.drain()
    assert len(port.sent) == first  # backing off
    port.status = "Accepted"
    clocks.advance(10.0)
    feed(engine, clocks, 49.8, 1)
    await engine.drain()
    assert engine.limits


async def test_setpoint_ends_by_itself_and_releases() -> None:
    port, clocks = FakePort(), Clocks()
    port.release.set()
    engine = engine_for(2, port, clocks)
    end = clocks.wall.timestamp() + 5.0
    service = engine.activate("setpoint", Setpoint(7_000.0, clocks.wall.timestamp(), end))
    await engine.drain()
    assert len(engine.limits) == 1  # 14 kW → 7 kW: one unit paused
    clocks.advance(5.0)
    engine.tick()
    await engine.drain()
    assert not service.active and engine.limits == {}


async def test_a_limit_set_after_an_idle_tick_is_still_renewed() -> None:
    port, clocks = FakePort(), Clocks()
    port.release.set()
    engine = engine_for(1, port, clocks, valid_for_s=600.0, renew_before_s=200.0)
    feed(engine, clocks, 50.0)
    engine.activate("fcr", Fcr(7_000.0))
    engine.tick()  # no limit yet: nothing to renew, ever, until one is set
    feed(engine, clocks, 49.8)
    await engine.drain()
    for _ in range(5):
        clocks.advance(80.2)
        feed(engine, clocks, 49.8, 1)
        engine.tick()
    await engine.drain()
    assert [a.action for a in engine.audit].count("renew") == 1


async def test_a_step_hands_every_command_to_the_port_in_one_batch() -> None:
    """No task per command: the step is one `send_limits` call, made before any answer;
    the answers come back as one batch and the refusals among them fall back together."""
    port, clocks = FakePort(), Clocks()
    engine = engine_for(20, port, clocks)
    amps_only = {f"S{i}" for i in range(0, 20, 4)}
    port.refuse = {sid: {"W"} for sid in amps_only}
    engine.activate("fcr", Fcr(20 * 7_000.0))
    feed(engine, clocks, 49.8)
    assert port.batches == [20] and port.answered == 0 and not engine.audit
    port.release.set()
    await engine.drain()
    assert port.batches == [20, 5]  # the five refusals, retried in amps in one batch
    sets = Counter(a.outcome for a in engine.audit if a.action == "set")
    assert sets == {"Accepted": 15, "Rejected": 5}
    fallbacks = [a for a in engine.audit if a.action == "fallback"]
    assert {a.station_id for a in fallbacks} == amps_only
    assert {(a.outcome, a.reason) for a in fallbacks} == {("Accepted", "Rejected: try A/natural")}
    assert len(engine.limits) == 20 and sum(engine.limits.values()) == 0.0
    assert all(engine.fleet.stations[f"S{i}"].evses[1].power_w == 0.0 for i in range(20))
    assert len(engine.expect) == 20  # the closed loop watches every accepted limit
    # releasing is one batch too
    feed(engine, clocks, 50.0)
    assert port.batches == [20, 5, 20]
    await engine.drain()
    assert engine.limits == {}
