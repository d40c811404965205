"""EventRecorder: every event kind lands in the right rows; failures lose nothing."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from store_helpers import T0, Target, TcpProxy, at, energy, meter, power, rows, scalar, wait_until

from evflex.fleet.events import (
    CommandCompleted,
    Event,
    MeterSampled,
    SampledValue,
    StationBooted,
    StationConnected,
    StationDisconnected,
    StationNotice,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
    TransactionUpdated,
)
from evflex.fleet.model import EvseStatus, Protocol
from evflex.store import writer as writer_module
from evflex.store.repository import EvseRecord, Repository
from evflex.store.writer import EventRecorder


async def _count(engine: AsyncEngine, table: str) -> int:
    return int(await scalar(engine, f"SELECT count(*) FROM {table}"))


async def _samples(engine: AsyncEngine) -> int:
    """Sampled values stored (a meter_values row holds a MeterValue's values)."""
    return int(
        await scalar(
            engine, "SELECT coalesce(sum(json_array_length(sampled)), 0) FROM meter_values"
        )
    )


async def _evse(repo: Repository, station_id: str, evse_id: int) -> EvseRecord:
    """The EVSE row (load_evses only reports registered stations)."""
    found = [
        e for e in await repo.load_evses() if (e.station_id, e.evse_id) == (station_id, evse_id)
    ]
    assert len(found) == 1
    return found[0]


# -- meter samples ------------------------------------------------------------------------


async def test_every_sampled_value_is_one_row(
    recorder: EventRecorder, repo: Repository, engine: AsyncEngine
) -> None:
    plus2 = timezone(timedelta(hours=2))
    recorder(
        meter(
            "CS-1",
            1,
            0,
            SampledValue("Current.Import", 16.0, "A", "L1", "Sample.Periodic", "Outlet"),
            SampledValue("Current.Import", 15.5, "A", "L2", "Sample.Periodic", "Outlet"),
            energy(1234.5),
            tx="TX-9",
        )
    )
    # a station clock with an offset is stored as the same instant in UTC
    recorder(MeterSampled("CS-1", 2, at(3600).astimezone(plus2), at(3601), (power(1.0),)))
    await recorder.flush()
    assert recorder.stats.buffered_rows == 0
    got = await repo.meter_values("CS-1", None, None)
    assert len(got) == 4
    l1, l2, reg, other = got[0], got[1], got[2], got[3]
    assert {l1["phase"], l2["phase"]} == {"L1", "L2"}
    assert (l1["measurand"], l1["unit"], l1["context"], l1["location"]) == (
        "Current.Import",
        "A",
        "Sample.Periodic",
        "Outlet",
    )
    assert sorted([l1["value"], l2["value"]]) == [15.5, 16.0]
    assert (reg["measurand"], reg["value"], reg["transaction_id"]) == (
        "Energy.Active.Import.Register",
        1234.5,
        "TX-9",
    )
    assert reg["ts"] == T0 and reg["received_at"] == at(0.5)
    assert (other["evse_id"], other["ts"], other["transaction_id"]) == (2, at(3600), None)
    assert other["ts"].tzinfo is not None and other["ts"].utcoffset() == timedelta(0)


async def test_nan_and_infinite_readings_do_not_block_the_batch(
    recorder: EventRecorder, repo: Repository
) -> None:
    recorder(meter("CS-1", 1, 0, SampledValue("Voltage", math.nan, "V"), power(math.inf)))
    recorder(meter("CS-1", 1, 1, power(5.0)))
    await recorder.flush()
    values = [r["value"] for r in await repo.meter_values("CS-1", None, None)]
    assert len(values) == 3
    assert values[0] is None or math.isnan(values[0])  # SQLite keeps NaN as NULL
    assert values[1:] == [math.inf, 5.0]
    assert recorder.stats.rejected_rows == 0


# -- EVSE live state ----------------------------------------------------------------------


async def test_status_is_coalesced_to_the_latest_per_evse(
    recorder: EventRecorder, repo: Repository, engine: AsyncEngine
) -> None:
    await repo.add_station("CS-1", None)
    for i, status in enumerate(
        (EvseStatus.PREPARING, EvseStatus.CHARGING, EvseStatus.SUSPENDED_EV)
    ):
        recorder(StatusChanged("CS-1", 1, 1, status, at(i)))
    recorder(StatusChanged("CS-1", 2, 1, EvseStatus.FAULTED, at(0), "GroundFailure"))
    recorder(StatusChanged("CS-1", 0, 0, EvseStatus.UNAVAILABLE, at(0)))  # the station itself
    await recorder.flush()
    evses = {e.evse_id: e for e in await repo.load_evses()}
    assert set(evses) == {1, 2}
    assert (evses[1].status, evses[1].status_at) == ("SuspendedEV", at(2))
    assert evses[2].status == "Faulted"
    # a later flush with only meter data keeps the status
    recorder(meter("CS-1", 1, 10, power(3.0, "kW")))
    await recorder.flush()
    evse = await _evse(repo, "CS-1", 1)
    assert (evse.status, evse.power_w) == ("SuspendedEV", 3000.0)
    assert await _count(engine, "evses") == 2


async def test_live_meter_values_follow_the_fleet_rules(
    recorder: EventRecorder, repo: Repository
) -> None:
    await repo.add_station("CS-1", None)
    recorder(
        meter(
            "CS-1",
            1,
            0,
            power(2.0, "kW", "L1"),
            power(2.5, "kW", "L2"),
            SampledValue("Power.Active.Export", 500.0, "W"),
            energy(3.25, "kWh"),
            SampledValue("SoC", 41.0, "Percent"),
        )
    )
    await recorder.flush()
    evse = await _evse(repo, "CS-1", 1)
    assert evse.power_w == pytest.approx(4000.0)  # phases summed, export subtracted
    assert evse.energy_wh == pytest.approx(3250.0)
    assert evse.soc_pct == 41.0
    assert evse.power_measured_at == at(0)
    assert evse.status is None


async def test_late_backlog_does_not_overwrite_newer_live_values(
    recorder: EventRecorder, repo: Repository
) -> None:
    await repo.add_station("CS-1", None)
    recorder(meter("CS-1", 1, 100, power(7000.0), energy(5000.0)))
    recorder(meter("CS-1", 1, 50, power(1.0), energy(1.0)))  # older, same batch
    await recorder.flush()
    recorder(meter("CS-1", 1, 60, power(2.0), energy(2.0)))  # older, next batch
    await recorder.flush()
    evse = await _evse(repo, "CS-1", 1)
    assert (evse.power_w, evse.energy_wh, evse.power_measured_at) == (7000.0, 5000.0, at(100))
    recorder(meter("CS-1", 1, 101, power(11.0)))
    await recorder.flush()
    evse = await _evse(repo, "CS-1", 1)
    assert (evse.power_w, evse.energy_wh, evse.power_measured_at) == (11.0, 5000.0, at(101))
    # energy and SoC have their own clock: an older energy-only sample is ignored,
    # a newer SoC-only one applies
    recorder(meter("CS-1", 1, 99, energy(3.0)))
    recorder(meter("CS-1", 1, 102, SampledValue("SoC", 80.0)))
    await recorder.flush()
    evse = await _evse(repo, "CS-1", 1)
    assert (evse.energy_wh, evse.soc_pct, evse.power_w) == (5000.0, 80.0, 11.0)


async def test_connector_zero_samples_are_history_only(
    recorder: EventRecorder, repo: Repository, engine: AsyncEngine
) -> None:
    recorder(meter("CS-1", 0, 0, energy(99.0), tx="T"))
    await recorder.flush()
    assert await _count(engine, "evses") == 0
    assert len(await repo.meter_values("CS-1", None, None)) == 1


async def test_charging_state_updates_the_evse_status(
    recorder: EventRecorder, repo: Repository
) -> None:
    await repo.add_station("CS-1", None)
    recorder(TransactionStarted("CS-1", 1, "T", at(0), seq_no=0))
    recorder(TransactionUpdated("CS-1", 1, "T", at(1), "Charging", seq_no=1))
    recorder(TransactionUpdated("CS-1", 1, "T", at(2), "SuspendedEV", offline=True, seq_no=2))
    await recorder.flush()
    evse = await _evse(repo, "CS-1", 1)
    assert (evse.status, evse.status_at) == ("Charging", at(1))  # offline events: history


# -- stations -----------------------------------------------------------------------------


async def test_station_connect_boot_and_heartbeat(
    recorder: EventRecorder, repo: Repository
) -> None:
    await repo.add_station("CS-1", "hash")
    recorder(StationConnected("CS-1", Protocol.OCPP16, at(0)))
    recorder(StationBooted("CS-1", "Acme", "X1", "1.2", "SN-7", "PowerUp", at(1)))
    recorder(StationSeen("CS-1", at(30)))
    recorder(StationSeen("CS-1", at(20)))  # out of order: last_seen keeps the latest
    recorder(StationDisconnected("CS-1", at(40)))
    await recorder.flush()
    (station,) = await repo.load_stations()
    assert station.protocol == "ocpp1.6"
    assert (station.vendor, station.model, station.firmware, station.serial) == (
        "Acme",
        "X1",
        "1.2",
        "SN-7",
    )
    assert (station.booted_at, station.last_seen, station.password_hash) == (at(1), at(30), "hash")

    # reconnect with another protocol and a new firmware, in separate batches
    recorder(StationConnected("CS-1", Protocol.OCPP201, at(50)))
    await recorder.flush()
    (station,) = await repo.load_stations()
    assert (station.protocol, station.vendor, station.last_seen) == ("ocpp2.0.1", "Acme", at(50))
    recorder(StationBooted("CS-1", "Acme", "X1", "2.0", None, "FirmwareUpdate", at(60)))
    await recorder.flush()
    (station,) = await repo.load_stations()
    assert (station.firmware, station.serial, station.booted_at) == ("2.0", None, at(60))
    assert station.protocol == "ocpp2.0.1"


# -- transactions ---------------------------------------------------------------------------


async def test_transaction_lifecycle_with_seq_gaps_across_batches(
    recorder: EventRecorder, repo: Repository
) -> None:
    recorder(TransactionStarted("CS-1", 1, "T1", at(0), "TOK", 100.0, seq_no=0))
    recorder(TransactionStarted("CS-1", 1, "T1", at(5), "OTHER", 999.0, seq_no=0))  # repeat
    recorder(TransactionUpdated("CS-1", 1, "T1", at(10), "Charging", seq_no=1))
    recorder(TransactionUpdated("CS-1", 1, "T1", at(20), seq_no=4))  # 2 and 3 missing
    await recorder.flush()
    (tx,) = await repo.transactions("CS-1")
    assert (tx["id_token"], tx["meter_start_wh"], tx["started_at"]) == ("TOK", 100.0, at(0))
    assert (tx["last_seq_no"], tx["seq_gaps"], tx["offline_events"]) == (4, 2, 0)
    assert tx["stopped_at"] is None

    recorder(TransactionUpdated("CS-1", 1, "T1", at(30), offline=True, seq_no=6))  # 5 missing
    recorder(TransactionUpdated("CS-1", 1, "T1", at(25), offline=True, seq_no=5))  # late
    await recorder.flush()
    recorder(TransactionStopped("CS-1", "T1", at(90), 2100.0, "EVDisconnected", seq_no=7))
    await recorder.flush()
    (tx,) = await repo.transactions("CS-1")
    assert (tx["last_seq_no"], tx["seq_gaps"], tx["offline_events"]) == (7, 3, 2)
    assert (tx["stopped_at"], tx["meter_stop_wh"], tx["stop_reason"]) == (
        at(90),
        2100.0,
        "EVDisconnected",
    )
    assert await repo.open_transactions() == []


async def test_a_new_recorder_continues_from_the_stored_transaction(
    engine: AsyncEngine, repo: Repository
) -> None:
    first = EventRecorder(engine)
    first(TransactionStarted("CS-1", 1, "T1", at(0), seq_no=0))
    first(TransactionUpdated("CS-1", 1, "T1", at(1), seq_no=1))
    await first.flush()
    second = EventRecorder(engine)  # a restart: nothing cached
    second(TransactionUpdated("CS-1", 1, "T1", at(2), seq_no=3, offline=True))
    second(TransactionStarted("CS-1", 1, "T1", at(9), "LATE", seq_no=0))  # still a repeat
    await second.flush()
    (tx,) = await repo.transactions("CS-1")
    assert (tx["last_seq_no"], tx["seq_gaps"], tx["offline_events"]) == (3, 1, 1)
    assert (tx["started_at"], tx["id_token"]) == (at(0), None)


async def test_a_failed_chunk_leaves_no_transaction_state_behind(
    recorder: EventRecorder, repo: Repository
) -> None:
    recorder(TransactionStarted("CS-1", 1, "T1", at(0), seq_no=0))
    await recorder.flush()
    recorder(TransactionUpdated("CS-1", 1, "T1", at(1), offline=True, seq_no=2))
    # evse_id is NOT NULL: the database refuses the row
    recorder(MeterSampled("CS-1", None, at(1), at(1), (power(1.0),)))  # type: ignore[arg-type]
    await recorder.flush()  # fails whole, then the update is written alone
    assert recorder.stats.rejected_rows == 1
    (tx,) = await repo.transactions("CS-1")
    assert (tx["last_seq_no"], tx["seq_gaps"], tx["offline_events"]) == (2, 1, 1)


async def test_transaction_started_and_stopped_in_one_batch(
    recorder: EventRecorder, repo: Repository
) -> None:
    recorder(TransactionStarted("CS-1", 3, "7", at(0), "TOK", 0.0))
    recorder(TransactionStopped("CS-1", "7", at(5), 10.0, "Local"))
    await recorder.flush()
    (tx,) = await repo.transactions("CS-1")
    assert (tx["transaction_id"], tx["evse_id"], tx["stopped_at"]) == ("7", 3, at(5))


async def test_updates_and_stops_without_a_seen_start_are_kept(
    recorder: EventRecorder, repo: Repository
) -> None:
    recorder(TransactionUpdated("CS-1", 2, "U", at(10), "Charging", seq_no=3))
    recorder(TransactionStopped("CS-1", "S", at(20), 50.0, "Remote"))
    await recorder.flush()
    txs = {x["transaction_id"]: x for x in await repo.transactions("CS-1")}
    assert (txs["U"]["evse_id"], txs["U"]["started_at"], txs["U"]["last_seq_no"]) == (
        2,
        at(10),
        3,
    )
    assert (txs["S"]["started_at"], txs["S"]["stopped_at"], txs["S"]["meter_stop_wh"]) == (
        None,
        at(20),
        50.0,
    )


# -- notices and the command log ------------------------------------------------------------


async def test_notices_and_command_log(
    recorder: EventRecorder, repo: Repository, engine: AsyncEngine
) -> None:
    recorder(StationNotice("CS-1", "security_event", at(0), {"type": "TamperDetected", "n": [1]}))
    recorder(StationNotice("CS-1", "firmware_status", at(1), {"status": "Installed"}))
    recorder(StationNotice("CS-2", "report", at(1), {"x": "\x00 and ü"}))
    recorder(
        CommandCompleted(
            "CS-1",
            "SetChargingProfile",
            {"evseId": 1, "limit": 11.5},
            at(2),
            42.5,
            "result",
            {"status": "Accepted"},
        )
    )
    recorder(CommandCompleted("CS-1", "Reset", {"type": "Hard"}, at(3), 30000.0, "timeout"))
    recorder(CommandCompleted("CS-1", "Foo", {}, at(4), 1.0, "error", None, "NotImplemented: no"))
    await recorder.flush()
    events = await repo.station_events("CS-1")
    assert [(e["kind"], e["at"]) for e in events] == [
        ("firmware_status", at(1)),
        ("security_event", at(0)),
    ]
    assert events[1]["data"] == {"type": "TamperDetected", "n": [1]}
    assert (await repo.station_events("CS-2"))[0]["data"] == {"x": "\x00 and ü"}
    log = await repo.command_log("CS-1")
    assert [c["action"] for c in log] == ["Foo", "Reset", "SetChargingProfile"]
    foo, reset, profile = log
    assert (foo["outcome"], foo["error"], foo["response"]) == ("error", "NotImplemented: no", None)
    assert (reset["outcome"], reset["duration_ms"], reset["response"]) == ("timeout", 30000.0, None)
    assert profile["request"] == {"evseId": 1, "limit": 11.5}
    assert profile["response"] == {"status": "Accepted"}
    assert profile["sent_at"] == at(2)
    # a missing response is SQL NULL, not JSON null
    assert await scalar(engine, "SELECT count(*) FROM command_log WHERE response IS NULL") == 2


# -- batching, durability, failures ------------------------------------------------------------


async def test_writes_are_batched(engine: AsyncEngine) -> None:
    rec = EventRecorder(engine, max_batch_rows=1000)
    for i in range(3000):
        rec(meter("CS-1", 1, i, power(1.0), energy(float(i)), SampledValue("SoC", 50.0)))
    assert rec.stats.buffered_rows == 3000  # one row per MeterValue, whatever it holds
    await rec.flush()
    # 3,000 rows in 1,000-row chunks: three transactions, not one per message
    assert rec.stats.flushes == 3
    assert rec.stats.rows_written == 3000 + 3  # meter values + one coalesced EVSE row per chunk
    assert rec.stats.buffered_rows == 0
    assert await _count(engine, "meter_values") == 3000
    assert await _samples(engine) == 9000


async def test_acknowledged_sample_is_durable_within_one_second(
    engine: AsyncEngine, target: Target
) -> None:
    rec = EventRecorder(engine)  # default interval: 0.25 s
    await rec.start()
    reader = target.engine()  # another connection pool, as another process would see it
    try:
        rec(meter("CS-1", 1, 0, power(1.0)))
        took = await wait_until(
            lambda: _has_rows(reader, "meter_values"), timeout_s=1.0, interval_s=0.01
        )
        assert took <= 1.0
    finally:
        await rec.stop()
        await reader.dispose()


async def _has_rows(engine: AsyncEngine, table: str) -> bool:
    return await _count(engine, table) > 0


async def test_stop_writes_what_is_buffered(engine: AsyncEngine) -> None:
    rec = EventRecorder(engine, flush_interval_s=60)
    await rec.start()
    rec(meter("CS-1", 1, 0, power(1.0)))
    rec(CommandCompleted("CS-1", "Reset", {}, at(0), 1.0, "result", {}))
    await rec.stop()
    assert await _count(engine, "meter_values") == 1
    assert await _count(engine, "command_log") == 1


def _mixed_events() -> list[Event]:
    return [
        StationBooted("CS-1", "Acme", "X1", None, None, None, at(0)),
        StatusChanged("CS-1", 1, 1, EvseStatus.CHARGING, at(0)),
        TransactionStarted("CS-1", 1, "T", at(0), seq_no=0),
        meter("CS-1", 1, 1, power(1.0), energy(2.0), tx="T"),
        meter("CS-1", 1, 2, power(3.0), energy(4.0), tx="T"),
        TransactionStopped("CS-1", "T", at(3), 4.0, "Local", seq_no=1),
        StationNotice("CS-1", "report", at(3), {"a": 1}),
        CommandCompleted("CS-1", "Reset", {}, at(4), 1.0, "result", {}),
    ]


async def _assert_mixed_written(engine: AsyncEngine) -> None:
    counts = {
        table: await _count(engine, table)
        for table in (
            "stations",
            "evses",
            "transactions",
            "meter_values",
            "station_events",
            "command_log",
        )
    }
    assert counts == {
        "stations": 1,
        "evses": 1,
        "transactions": 1,
        "meter_values": 2,
        "station_events": 1,
        "command_log": 1,
    }
    (tx,) = await rows(engine, "SELECT stopped_at, last_seq_no FROM transactions")
    assert tx["stopped_at"] is not None and tx["last_seq_no"] == 1


async def test_missing_tables_keep_rows_until_the_schema_exists(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    engine = target.engine()  # not migrated: every write fails
    rec = EventRecorder(engine)
    try:
        for event in _mixed_events():
            rec(event)
        with caplog.at_level(logging.ERROR, logger="evflex.store.writer"):
            await rec.flush()
        assert rec.stats.flush_failures == 1
        assert rec.stats.buffered_rows == 8  # one row per event
        assert rec.stats.rows_written == 0 and rec.stats.rejected_rows == 0
        assert "STORE WRITE FAILING" in caplog.text
        rec(meter("CS-1", 1, 5, power(5.0)))  # keeps queueing meanwhile
        await target.upgrade()
        await rec.flush()
        assert rec.stats.buffered_rows == 0
        assert await _count(engine, "meter_values") == 3
        assert await _samples(engine) == 5
        assert await _count(engine, "transactions") == 1
    finally:
        await engine.dispose()


async def test_sqlite_unreachable_file_recovers_with_backoff(tmp_path: Path) -> None:
    directory = tmp_path / "not-yet"
    target = Target("sqlite", f"sqlite+aiosqlite:///{directory / 'evflex.db'}")
    engine = target.engine()
    rec = EventRecorder(engine, flush_interval_s=0.05)
    await rec.start()
    try:
        for event in _mixed_events():
            rec(event)
        await wait_until(lambda: _true(rec.stats.flush_failures >= 2), timeout_s=5.0)
        assert rec.stats.buffered_rows == 8  # nothing lost while the file cannot be opened
        directory.mkdir()
        await target.upgrade()
        await wait_until(lambda: _true(rec.stats.buffered_rows == 0), timeout_s=5.0)
        await _assert_mixed_written(engine)
    finally:
        await rec.stop(timeout_s=1.0)
        await engine.dispose()


async def _true(value: bool) -> bool:
    return value


@pytest.mark.postgres
async def test_postgres_outage_keeps_rows_and_recovers(pg_target: Target) -> None:
    target = pg_target
    await target.upgrade()
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.listen_port}/test"
    engine = target.with_url(url).engine()
    rec = EventRecorder(engine, flush_interval_s=0.05)
    try:
        rec(meter("CS-1", 1, 0, power(1.0)))
        await rec.flush()  # pool has a live connection through the proxy now
        assert rec.stats.rows_written == 2  # the sample and its EVSE row
        await rec.start()
        await proxy.stop()
        for event in _mixed_events():
            rec(event)
        await wait_until(lambda: _true(rec.stats.flush_failures >= 2), timeout_s=10.0)
        assert rec.stats.buffered_rows == 8
        await proxy.start()  # same port
        await wait_until(lambda: _true(rec.stats.buffered_rows == 0), timeout_s=10.0)
        assert await _count(engine, "meter_values") == 3
    finally:
        await rec.stop(timeout_s=1.0)
        await engine.dispose()
        await proxy.stop()


async def test_a_rejected_event_is_isolated_and_the_rest_written(
    recorder: EventRecorder, engine: AsyncEngine
) -> None:
    good = [meter("CS-1", 1, i, power(float(i))) for i in range(100)]
    # evse_id is NOT NULL: the database refuses this one row on both backends
    poison = MeterSampled("CS-1", None, at(50.5), at(50.5), (power(2.0),))  # type: ignore[arg-type]
    for event in (*good[:50], poison, *good[50:], *_mixed_events()):
        recorder(event)
    await recorder.flush()
    assert recorder.stats.rejected_rows == 1  # the poisoned MeterValue, nothing else
    assert [event for event, _ in recorder.rejected] == [poison]
    assert recorder.stats.buffered_rows == 0
    assert await _count(engine, "meter_values") == 100 + 2
    assert await _count(engine, "transactions") == 1
    # bisection, not one transaction per event
    assert recorder.stats.flush_failures <= 2 * math.ceil(math.log2(110)) + 2


@pytest.mark.parametrize("bad", ["huge_int", "surrogate"])
async def test_values_a_driver_cannot_encode_are_rejected_alone(
    recorder: EventRecorder, engine: AsyncEngine, bad: str
) -> None:
    if bad == "huge_int":
        poison: Event = StatusChanged("CS-1", 2**70, 1, EvseStatus.CHARGING, at(0))
    else:
        poison = TransactionStarted("CS-1", 1, "T-\udcff", at(0))
    recorder(meter("CS-1", 1, 0, power(1.0)))
    recorder(poison)
    recorder(meter("CS-1", 1, 1, power(2.0)))
    await recorder.flush()
    assert recorder.stats.rejected_rows == 1
    assert await _count(engine, "meter_values") == 2


async def test_buffer_cap_drops_and_counts_samples(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    rec = EventRecorder(engine, max_buffer_rows=10)
    for i in range(12):
        rec(meter("CS-1", 1, i, power(1.0), energy(1.0), SampledValue("SoC", 1.0)))
    assert (rec.stats.buffered_rows, rec.stats.dropped_rows) == (10, 2)
    rec(StationSeen("CS-1", at(15)))  # a heartbeat is shed like a sample
    assert (rec.stats.buffered_rows, rec.stats.dropped_rows) == (10, 3)
    # state and audit events get 10% headroom beyond the cap
    rec(TransactionStarted("CS-1", 1, "T", at(17)))
    rec(TransactionStopped("CS-1", "T", at(18)))
    assert (rec.stats.buffered_rows, rec.stats.dropped_rows) == (11, 4)
    await rec.flush()
    assert await _count(engine, "meter_values") == 10
    assert await _samples(engine) == 30
    assert await _count(engine, "transactions") == 1
    with caplog.at_level(logging.ERROR, logger="evflex.store.writer"):
        rec._report_drops()
    assert "STORE BUFFER FULL: 4 rows dropped" in caplog.text


async def test_recording_never_raises_and_unknown_objects_do_not_block(
    recorder: EventRecorder, engine: AsyncEngine
) -> None:
    recorder(object())  # type: ignore[arg-type]
    recorder(meter("CS-1", 1, 0, power(1.0)))
    await recorder.flush()
    assert recorder.stats.buffered_rows == 0
    assert await _count(engine, "meter_values") == 1


async def test_recording_cost_is_a_list_append(engine: AsyncEngine) -> None:
    """No awaits, no rows built on the hot path: only the flush touches the database."""
    rec = EventRecorder(engine)
    events = [meter("CS-1", 1, i, power(1.0)) for i in range(10_000)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    for event in events:
        rec(event)
    elapsed = loop.time() - started
    assert rec.stats.buffered_rows == 10_000 and rec.stats.flushes == 0
    assert await _count(engine, "meter_values") == 0
    assert elapsed / len(events) < 20e-6  # generous bound for slow CI machines; ~0.3 µs here


async def test_sqlite_writes_progress_while_the_loop_is_busy(tmp_path: Path) -> None:
    """With the loop thread kept busy by Python work (as under full telemetry load)
    and the process on one core like the benchmarked server, the writer thread
    still drains: it writes multi-row statements, so it needs the GIL back a few
    times per chunk, not once per row (which starved it: 0 rows in 15 s)."""
    target = Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'evflex.db'}")
    await target.upgrade()
    engine = target.engine()
    rec = EventRecorder(engine, flush_interval_s=0.05, max_batch_rows=2000)
    await rec.start()
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        for i in range(5000):
            rec(meter(f"CS-{i % 500}", 1, i, power(1.0), energy(float(i)), tx="T"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while rec.stats.buffered_rows and loop.time() < deadline:
            # 5 ms bursts of pure Python, never an idle loop
            burst_end = loop.time() + 0.005
            while loop.time() < burst_end:
                pass
            await asyncio.sleep(0)
        assert rec.stats.buffered_rows == 0
        assert await _count(engine, "meter_values") == 5000
        assert await _samples(engine) == 10_000
    finally:
        os.sched_setaffinity(0, cpus)
        await rec.stop()
        await engine.dispose()


async def test_sqlite_writes_eagerly_under_load(tmp_path: Path) -> None:
    """Enough rows buffered: the event that fills the buffer hands them to the writer
    thread at once; the periodic flush (30 s here) is not waited for."""
    target = Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'evflex.db'}")
    await target.upgrade()
    engine = target.engine()
    rec = EventRecorder(engine, flush_interval_s=1.0, eager_rows=100)
    rec._interval = 30.0  # past the validated range: the flusher never fires in this test
    await rec.start()
    try:
        for i in range(99):
            rec(meter("CS-1", 1, i, power(1.0), energy(float(i))))
        # below the threshold nothing was handed over (synchronous), so nothing can be written
        assert rec.stats.buffered_rows == 99 and not rec._queue
        rec(meter("CS-1", 1, 99, power(1.0), energy(99.0)))
        await wait_until(lambda: _true(rec.stats.buffered_rows == 0), timeout_s=5.0)
        assert await _count(engine, "meter_values") == 100
        assert rec.stats.flushes >= 1
    finally:
        await rec.stop()
        await engine.dispose()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux-only")
async def test_the_writer_thread_yields_the_core_to_the_serving_loop(tmp_path: Path) -> None:
    """The writer runs at a lower CPU priority (higher nice) than the loop's thread."""
    target = Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'evflex.db'}")
    await target.upgrade()
    engine = target.engine()
    rec = EventRecorder(engine)
    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    try:
        assert rec._executor is not None

        def writer_nice() -> int:
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        nice = await asyncio.wrap_future(rec._executor.submit(writer_nice))
        assert nice == min(19, loop_nice + writer_module._WRITER_NICE)
        # and the loop's thread is untouched
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_nice
    finally:
        await rec.stop()
        await engine.dispose()


def _may_raise_priority() -> bool:
    """Lowering a nice value needs root/CAP_SYS_NICE or RLIMIT_NICE headroom."""
    if not sys.platform.startswith("linux"):
        return False
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return os.geteuid() == 0 or soft >= 20


def _thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _room_to_lower() -> bool:
    """A thread at nice 19 (e.g. the suite run under `nice -n 19`) cannot be lowered."""
    return sys.platform.startswith("linux") and _thread_nice() < 19


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux-only")
@pytest.mark.skipif(not _may_raise_priority(), reason="needs CAP_SYS_NICE or RLIMIT_NICE")
@pytest.mark.skipif(not _room_to_lower(), reason="the test process runs at nice 19")
def test_a_writer_that_falls_behind_runs_at_the_loops_priority_until_it_caught_up() -> None:
    """Rows that waited > 0.5 s (half the 1 s durability budget): full priority;
    back to the lowered one below 0.1 s; nothing changes in between (hysteresis)."""
    stats = writer_module.RecorderStats()
    prio = writer_module.WriterPriority(stats)
    base = _thread_nice()
    with ThreadPoolExecutor(1, initializer=prio.lower) as pool:

        def behind(waited_s: float) -> int:
            prio.behind(waited_s)
            return _thread_nice()

        lowered = min(19, base + writer_module._WRITER_NICE)
        assert pool.submit(_thread_nice).result() == lowered
        assert pool.submit(behind, 0.3).result() == lowered and stats.boosts == 0
        assert pool.submit(behind, 0.6).result() == base
        assert stats.boosted and stats.boosts == 1
        assert pool.submit(behind, 0.3).result() == base and stats.boosted
        assert pool.submit(behind, 0.05).result() == lowered and not stats.boosted
        assert pool.submit(behind, 2.0).result() == base and stats.boosts == 2
    prio.behind(5.0)  # from another thread (the loop's): ignored
    assert _thread_nice() == base and stats.boosts == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux-only")
def test_a_writer_already_at_nice_19_is_never_boosted() -> None:
    """Nothing to come back from: no boost is counted, nothing is changed."""
    stats = writer_module.RecorderStats()
    prio = writer_module.WriterPriority(stats)

    def at_bottom() -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        prio.lower()

    with ThreadPoolExecutor(1, initializer=at_bottom) as pool:

        def behind(waited_s: float) -> int:
            prio.behind(waited_s)
            return _thread_nice()

        assert pool.submit(behind, 3.0).result() == 19
    assert stats.boosts == 0 and not stats.boosted


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux-only")
@pytest.mark.skipif(not _room_to_lower(), reason="the test process runs at nice 19")
def test_a_writer_that_may_not_raise_its_priority_says_so_once_and_stays_lowered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stats = writer_module.RecorderStats()
    prio = writer_module.WriterPriority(stats)
    with ThreadPoolExecutor(1, initializer=prio.lower) as pool:
        lowered = pool.submit(_thread_nice).result()
        real = os.setpriority

        def refuse_raising(which: int, who: int, nice: int) -> None:
            if nice < os.getpriority(which, who):
                raise PermissionError(1, "Operation not permitted")
            real(which, who, nice)

        monkeypatch.setattr(os, "setpriority", refuse_raising)

        def behind(waited_s: float) -> int:
            prio.behind(waited_s)
            return _thread_nice()

        with caplog.at_level(logging.WARNING, logger="evflex.store.writer"):
            for waited_s in (0.6, 3.0, 0.0, 0.9):
                assert pool.submit(behind, waited_s).result() == lowered
        assert stats.boosts == 0 and not stats.boosted
        assert sum("cannot run at the server's priority" in r.message for r in caplog.records) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux-only")
@pytest.mark.skipif(not _may_raise_priority(), reason="needs CAP_SYS_NICE or RLIMIT_NICE")
@pytest.mark.skipif(not _room_to_lower(), reason="the test process runs at nice 19")
async def test_the_recorder_boosts_its_writer_for_rows_that_waited_and_lowers_it_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows held up behind a busy writer are written at full priority; once the
    queue is empty the writer is lowered again."""
    monkeypatch.setattr(writer_module, "_BOOST_AFTER_S", 0.0)  # any wait counts
    target = Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'evflex.db'}")
    await target.upgrade()
    engine = target.engine()
    rec = EventRecorder(engine, flush_interval_s=0.05)
    await rec.start()
    try:
        assert rec._executor is not None
        gate = threading.Event()
        blocked = rec._executor.submit(gate.wait, 10.0)  # the writer is busy elsewhere
        for i in range(50):
            rec(meter("CS-1", 1, i, power(1.0)))
        await wait_until(lambda: _true(bool(rec._queue)), timeout_s=5.0)  # handed over
        gate.set()
        assert blocked.result(timeout=10.0)
        await wait_until(lambda: _true(rec.stats.buffered_rows == 0), timeout_s=5.0)
        assert await _count(engine, "meter_values") == 50
        assert rec.stats.boosts >= 1
        assert rec.stats.writer_cpu_s > 0  # the writer's work is counted
        await rec.flush()  # a drain that finds the queue empty lowers it again
        assert not rec.stats.boosted
        nice = await asyncio.wrap_future(rec._executor.submit(_thread_nice))
        assert nice == min(19, _thread_nice() + writer_module._WRITER_NICE)
    finally:
        await rec.stop()
        await engine.dispose()


async def test_the_writer_cpu_counter_moves_during_a_long_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted per chunk: at saturation one drain lasts as long as the load, and a
    per-drain count would read 0 for the whole benchmark window."""
    target = Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'evflex.db'}")
    await target.upgrade()
    engine = target.engine()
    rec = EventRecorder(engine, max_batch_rows=10)
    chunks = 0
    second_chunk = threading.Event()
    go_on = threading.Event()
    real_write = writer_module.Batch.write_sync

    def write_sync(batch: writer_module.Batch, *args: object, **kwargs: object) -> int:
        nonlocal chunks
        chunks += 1
        if chunks == 2:  # the drain is under way: hold it here
            second_chunk.set()
            go_on.wait(10.0)
        return real_write(batch, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_module.Batch, "write_sync", write_sync)
    await rec.start()
    try:
        for i in range(100):
            rec(meter("CS-1", 1, i, power(1.0)))
        drain = asyncio.ensure_future(rec.flush())
        assert await asyncio.to_thread(second_chunk.wait, 10.0)
        assert rec.stats.flushes == 1 and not drain.done()
        assert rec.stats.writer_cpu_s > 0  # the first chunk's CPU is in already
        go_on.set()
        await drain
        assert await _count(engine, "meter_values") == 100
    finally:
        go_on.set()
        await rec.stop()
        await engine.dispose()


async def test_sqlite_wal_is_checkpointed_by_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own checkpoints are off on the writer connection; the writer thread
    copies the WAL back itself, so the WAL is reused instead of growing with every
    row ever written."""
    monkeypatch.setattr(writer_module, "_CHECKPOINT_EVERY_S", 0.0)  # before every chunk
    target = Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'evflex.db'}")
    await target.upgrade()
    engine = target.engine()
    rec = EventRecorder(engine)
    wal = tmp_path / "evflex.db-wal"
    try:
        for round_ in range(20):
            for i in range(1000):
                rec(meter(f"CS-{i}", 1, round_ * 1000 + i, power(1.0), energy(float(i))))
            await rec.flush()
        assert await _count(engine, "meter_values") == 20_000
        # without checkpoints the WAL holds every page written by 20 rounds; with them
        # it is rewound after each round and stays at about one round's pages
        main_size = (tmp_path / "evflex.db").stat().st_size
        assert wal.stat().st_size < main_size
    finally:
        await rec.stop()
        await engine.dispose()
