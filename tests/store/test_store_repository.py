"""Repository: registrations, tokens and the history queries, on every backend."""

from __future__ import annotations

import hashlib
from datetime import timedelta, timezone

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from store_helpers import T0, at, energy, meter, power, rows, scalar

from evflex.fleet.events import (
    CommandCompleted,
    StationBooted,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)
from evflex.fleet.model import EvseStatus
from evflex.store.repository import Repository, StationExists
from evflex.store.writer import EventRecorder

# -- stations ---------------------------------------------------------------------------


async def test_add_and_load_station(repo: Repository) -> None:
    await repo.add_station("CS-1", "sha256$aa$bb")
    await repo.add_station("CS-2", None)
    loaded = {s.station_id: s for s in await repo.load_stations()}
    assert set(loaded) == {"CS-1", "CS-2"}
    assert loaded["CS-1"].password_hash == "sha256$aa$bb"
    assert loaded["CS-2"].password_hash is None
    assert loaded["CS-1"].vendor is None and loaded["CS-1"].booted_at is None


async def test_add_duplicate_station_raises(repo: Repository) -> None:
    await repo.add_station("CS-1", "first")
    with pytest.raises(StationExists) as info:
        await repo.add_station("CS-1", "second")
    assert info.value.station_ids == ["CS-1"]
    assert [s.password_hash for s in await repo.load_stations()] == ["first"]


async def test_add_stations_in_bulk(repo: Repository) -> None:
    items: list[tuple[str, str | None]] = [(f"CS-{i:04d}", f"h{i}") for i in range(2500)]
    assert await repo.add_stations(items) == 2500  # more than one 2,000-row chunk
    loaded = await repo.load_stations()
    assert len(loaded) == 2500
    assert loaded[1234].station_id == "CS-1234" and loaded[1234].password_hash == "h1234"


async def test_add_stations_is_all_or_nothing(repo: Repository) -> None:
    await repo.add_station("CS-2", "old")
    with pytest.raises(StationExists) as info:
        await repo.add_stations([("CS-1", "a"), ("CS-2", "b"), ("CS-3", "c")])
    assert info.value.station_ids == ["CS-2"]
    assert [(s.station_id, s.password_hash) for s in await repo.load_stations()] == [
        ("CS-2", "old")
    ]


async def test_add_stations_refuses_repeated_ids_in_the_request(repo: Repository) -> None:
    with pytest.raises(StationExists) as info:
        await repo.add_stations([("CS-1", "a"), ("CS-9", None), ("CS-1", "b")])
    assert info.value.station_ids == ["CS-1"]
    assert await repo.load_stations() == []


async def test_add_stations_empty_is_a_no_op(repo: Repository) -> None:
    assert await repo.add_stations([]) == 0


async def test_registration_claims_a_placeholder_left_by_the_recorder(
    repo: Repository, recorder: EventRecorder
) -> None:
    # Auto-registration race: the boot is flushed before add_station commits.
    recorder(StationBooted("CS-1", "Acme", "X1", "1.0", "SN1", "PowerUp", T0))
    await recorder.flush()
    assert await repo.load_stations() == []  # a placeholder is not a registration
    await repo.add_station("CS-1", "secret-hash")
    (station,) = await repo.load_stations()
    assert station.password_hash == "secret-hash"
    assert (station.vendor, station.serial, station.booted_at) == ("Acme", "SN1", T0)
    with pytest.raises(StationExists):
        await repo.add_station("CS-1", "other")


async def test_deleted_station_is_not_resurrected_by_late_events(
    repo: Repository, recorder: EventRecorder
) -> None:
    await repo.add_station("CS-1", "hash")
    recorder(StatusChanged("CS-1", 1, 1, EvseStatus.AVAILABLE, T0))
    await recorder.flush()
    assert await repo.delete_station("CS-1") is True
    # still-buffered events of the deleted station arrive afterwards
    recorder(StationBooted("CS-1", "Acme", "X1", None, None, None, at(1)))
    recorder(StatusChanged("CS-1", 1, 1, EvseStatus.CHARGING, at(1)))
    await recorder.flush()
    assert recorder.stats.buffered_rows == 0
    assert await repo.load_stations() == []
    assert await repo.load_evses() == []


async def test_set_password(repo: Repository) -> None:
    await repo.add_station("CS-1", None)
    await repo.set_password("CS-1", "new-hash")
    assert [s.password_hash for s in await repo.load_stations()] == ["new-hash"]
    await repo.set_password("CS-1", None)
    assert [s.password_hash for s in await repo.load_stations()] == [None]


async def test_delete_station(repo: Repository, engine: AsyncEngine) -> None:
    await repo.add_station("CS-1", None)
    await repo.add_station("CS-2", None)
    rec = EventRecorder(engine)
    rec(StatusChanged("CS-1", 1, 1, EvseStatus.AVAILABLE, T0))
    rec(meter("CS-1", 1, 0, power(10.0)))
    await rec.flush()
    assert await repo.delete_station("CS-1") is True
    assert await repo.delete_station("CS-1") is False
    assert await repo.delete_station("nope") is False
    assert [s.station_id for s in await repo.load_stations()] == ["CS-2"]
    assert await scalar(engine, "SELECT count(*) FROM evses") == 0
    # history stays for audit
    assert await scalar(engine, "SELECT count(*) FROM meter_values") == 1


# -- fleet state at start-up ------------------------------------------------------------


async def test_load_evses_of_registered_stations(repo: Repository, engine: AsyncEngine) -> None:
    await repo.add_station("CS-1", None)
    rec = EventRecorder(engine)
    rec(StatusChanged("CS-1", 2, 1, EvseStatus.CHARGING, at(5)))
    rec(meter("CS-1", 2, 6, power(7.4, "kW"), energy(12.5, "kWh"), tx=None))
    rec(StatusChanged("GHOST", 1, 1, EvseStatus.AVAILABLE, at(5)))  # never registered
    await rec.flush()
    (evse,) = await repo.load_evses()
    assert (evse.station_id, evse.evse_id, evse.status) == ("CS-1", 2, "Charging")
    assert evse.status_at == at(5)
    assert evse.power_w == pytest.approx(7400.0)
    assert evse.power_measured_at == at(6)
    assert evse.energy_wh == pytest.approx(12500.0)
    assert evse.soc_pct is None


async def test_open_transactions(repo: Repository, engine: AsyncEngine) -> None:
    await repo.add_station("CS-1", None)
    rec = EventRecorder(engine)
    rec(TransactionStarted("CS-1", 1, "open", at(0), "TOKEN", 100.0, seq_no=0))
    rec(TransactionStarted("CS-1", 2, "closed", at(0), "TOKEN", 0.0))
    rec(TransactionStopped("CS-1", "closed", at(60), 500.0, "Local"))
    rec(TransactionStarted("GHOST", 1, "ghost-tx", at(0)))
    await rec.flush()
    (tx,) = await repo.open_transactions()
    assert (tx.station_id, tx.transaction_id, tx.evse_id) == ("CS-1", "open", 1)
    assert (tx.started_at, tx.id_token, tx.meter_start_wh) == (at(0), "TOKEN", 100.0)
    assert (tx.last_seq_no, tx.seq_gaps, tx.offline_events) == (0, 0, 0)


async def test_max_numeric_transaction_id(repo: Repository, engine: AsyncEngine) -> None:
    assert await repo.max_numeric_transaction_id() == 0
    rec = EventRecorder(engine)
    for tx_id in ("7", "42", "9", "abc", "12a", "a12", "1e9", "-5", " 77", "0042"):
        rec(TransactionStarted("CS-1", 1, tx_id, T0))
    rec(TransactionStarted("CS-2", 1, "41", T0))
    await rec.flush()
    assert await scalar(engine, "SELECT count(*) FROM transactions") == 11
    assert await repo.max_numeric_transaction_id() == 42


# -- history queries ----------------------------------------------------------------------


async def _samples(engine: AsyncEngine) -> None:
    rec = EventRecorder(engine)
    # recorded out of order: results must come back ordered by the station's time
    for s in (30, 10, 20, 0, 40):
        rec(meter("CS-1", 1, s, power(float(s)), tx="T1"))
    rec(meter("CS-1", 2, 15, power(-1.0)))
    rec(meter("CS-2", 1, 15, power(-2.0)))
    await rec.flush()


async def test_meter_values_ordered_with_inclusive_start_and_exclusive_end(
    repo: Repository, engine: AsyncEngine
) -> None:
    await _samples(engine)
    got = await repo.meter_values("CS-1", at(10), at(30))
    assert [r["ts"] for r in got] == [at(10), at(15), at(20)]
    assert [r["value"] for r in got] == [10.0, -1.0, 20.0]
    first = got[0]
    assert set(first) == {
        "evse_id",
        "transaction_id",
        "ts",
        "received_at",
        "measurand",
        "phase",
        "unit",
        "value",
        "context",
        "location",
    }
    assert (first["evse_id"], first["transaction_id"], first["measurand"]) == (
        1,
        "T1",
        "Power.Active.Import",
    )
    assert first["received_at"] == at(10.5)
    assert first["ts"].utcoffset() == timedelta(0)


async def test_meter_values_open_bounds_limit_and_evse_filter(
    repo: Repository, engine: AsyncEngine
) -> None:
    await _samples(engine)
    all_cs1 = await repo.meter_values("CS-1", None, None)
    assert [r["ts"] for r in all_cs1] == [at(0), at(10), at(15), at(20), at(30), at(40)]
    assert [r["ts"] for r in await repo.meter_values("CS-1", at(20), None)] == [
        at(20),
        at(30),
        at(40),
    ]
    assert [r["ts"] for r in await repo.meter_values("CS-1", None, at(10))] == [at(0)]
    assert [r["ts"] for r in await repo.meter_values("CS-1", None, None, limit=2)] == [
        at(0),
        at(10),
    ]
    assert [r["value"] for r in await repo.meter_values("CS-1", None, None, evse_id=2)] == [-1.0]
    assert await repo.meter_values("CS-3", None, None) == []


async def test_meter_values_bounds_in_another_time_zone(
    repo: Repository, engine: AsyncEngine
) -> None:
    await _samples(engine)
    plus2 = timezone(timedelta(hours=2))
    got = await repo.meter_values("CS-1", at(10).astimezone(plus2), at(20).astimezone(plus2))
    assert [r["ts"] for r in got] == [at(10), at(15)]


async def test_transactions_listing(repo: Repository, engine: AsyncEngine) -> None:
    rec = EventRecorder(engine)
    rec(TransactionStarted("CS-1", 1, "A", at(0), "TOK", 10.0))
    rec(TransactionStarted("CS-1", 1, "B", at(100)))
    rec(TransactionStarted("CS-1", 1, "C", at(50)))
    rec(TransactionStopped("CS-1", "A", at(40), 90.0, "EVDisconnected"))
    rec(TransactionStarted("CS-2", 1, "Z", at(0)))
    await rec.flush()
    listed = await repo.transactions("CS-1")
    assert [x["transaction_id"] for x in listed] == ["B", "C", "A"]
    a = listed[2]
    assert (a["stopped_at"], a["meter_stop_wh"], a["stop_reason"]) == (
        at(40),
        90.0,
        "EVDisconnected",
    )
    assert a["id_token"] == "TOK" and a["meter_start_wh"] == 10.0
    assert [x["transaction_id"] for x in await repo.transactions("CS-1", limit=1)] == ["B"]


async def test_command_log_newest_first(repo: Repository, engine: AsyncEngine) -> None:
    rec = EventRecorder(engine)
    for i, station in enumerate(("CS-1", "CS-2", "CS-1")):
        rec(
            CommandCompleted(
                station, "Reset", {"type": "Soft", "i": i}, at(i), 5.0, "result", {"ok": i}
            )
        )
    await rec.flush()
    cs1 = await repo.command_log("CS-1")
    assert [c["request"]["i"] for c in cs1] == [2, 0]
    every = await repo.command_log(None)
    assert [c["station_id"] for c in every] == ["CS-1", "CS-2", "CS-1"]
    assert [c["request"]["i"] for c in await repo.command_log(None, limit=2)] == [2, 1]


# -- API tokens ---------------------------------------------------------------------------


async def test_token_create_verify_revoke(repo: Repository, engine: AsyncEngine) -> None:
    admin = await repo.create_token("admin", "ops laptop")
    viewer = await repo.create_token("viewer")
    assert len(admin) >= 43 and admin != viewer
    assert await repo.verify_token(admin) == "admin"
    assert await repo.verify_token(viewer) == "viewer"
    assert await repo.verify_token(admin + "x") is None
    assert await repo.verify_token("") is None

    stored = await rows(engine, "SELECT id, name, token_hash FROM api_tokens ORDER BY id")
    assert stored[0]["name"] == "ops laptop"
    assert stored[0]["token_hash"] == hashlib.sha256(admin.encode()).hexdigest()
    assert all(admin not in str(r) for r in stored)  # only the digest is stored

    assert await repo.revoke_token(stored[0]["id"]) is True
    assert await repo.verify_token(admin) is None
    assert await repo.verify_token(viewer) == "viewer"
    assert await repo.revoke_token(stored[0]["id"]) is False
    assert await repo.revoke_token(999_999) is False
