"""Faulty chargers and battery protection, seen by an operator of the real evflex server.

The server runs as a separate process (`evflex serve`, see test_against_server.py),
shared by the tests of this module; each test brings its own small fleet under
its own id prefix. Commands go through `POST /api/v1/stations/{id}/commands/...`
and every assertion reads what the operator sees over REST: the command's answer,
the station's live state, the command log and the stored meter samples.

Faults are configured through `FleetConfig.faults` with a share of 1.0, on a
fleet of one OCPP 1.6 and one OCPP 2.0.1 charger. Battery conditions a test
cannot reach in seconds (a full pack, an overheated one) are set on the
simulated hardware before the command, as a technician would find them.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from evflex.sim import (
    DelayModel,
    Fault,
    FaultConfig,
    Fleet,
    FleetConfig,
    SessionConfig,
    SessionMode,
    SimEvent,
)
from evflex.sim.catalogue import CLASSES
from evflex.sim.physics import Battery
from tests.sim.test_against_server import Server, poll, running_server

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("evflex.app") is None, reason="the evflex server is not there yet"
    ),
    pytest.mark.asyncio(loop_scope="module"),
]
PASSWORD = "fault-integration-pw-1"
CHARGERS = "ac16@Home 7:1,ac201@Home 11 Pro:1"  # one per OCPP version
FAST = DelayModel(0.2, 0.5, 0.0, 0.5)  # profiles take hold within half a second
# In W, not A: an A limit is converted with the station's phases, so it does not bind a
# single-phase car on a three-phase station (Station._ac_to_watts uses the station's phases).
CURTAILED_W = 1500.0  # under half of what a Home 7 or Home 11 Pro draws, on any car
BESS_RATED_W = next(m for _, m in CLASSES["bess16"] if m.model == "Cube 100").max_power_w
NOISE_W = 25.0  # the simulated meter's jitter is ±20 W, reported to 0.1 W
TEST_BUDGET_S = 40.0


@dataclass
class Live:
    server: Server
    api: httpx.AsyncClient


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    """One server for the whole module: starting it costs seconds, each fleet milliseconds."""
    workdir: Path = tmp_path_factory.mktemp("evflex-server")
    async with running_server(workdir) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        async with httpx.AsyncClient(base_url=server.api, headers=headers, timeout=30) as api:
            yield Live(server, api)


@asynccontextmanager
async def fleet_on(
    live: Live,
    prefix: str,
    mix: str,
    stations: int,
    *,
    faults: dict[Fault, float] | None = None,
    slow_result_s: tuple[float, float] = (10.0, 45.0),
    sessions: SessionMode = SessionMode.ALL,
    observer: Callable[[SimEvent], None] | None = None,
) -> AsyncIterator[Fleet]:
    """A booted fleet on the shared server, reporting power every second and on 100 W deltas."""
    config = FleetConfig(
        csms=live.server.ocpp_url,
        stations=stations,
        mix=mix,
        prefix=prefix,
        password=PASSWORD,
        sessions=SessionConfig(sessions),
        faults=FaultConfig(faults or {}, slow_result_s=slow_result_s),
        delays=FAST,
        meter_interval_s=1,
        delta_w=100,
        observer=observer,
    )
    async with Fleet(config) as fleet:
        assert await fleet.wait_booted(timeout_s=15), "fleet did not boot"
        yield fleet


# -- what the operator sees -----------------------------------------------------------
def evse_of(detail: dict[str, Any], evse_id: int) -> dict[str, Any]:
    found = [e for e in detail["evses"] if e["evse_id"] == evse_id]
    return found[0] if found else {"evse_id": evse_id, "power_w": None, "transaction": None}


def when(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value)


async def station(live: Live, sid: str) -> dict[str, Any]:
    response = await live.api.get(f"/api/v1/stations/{sid}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def wait_evse(
    live: Live, sid: str, evse_id: int, done: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any]:
    """Poll the station until its EVSE `evse_id` satisfies `done`; returns that EVSE."""
    detail = await poll(
        live.api,
        f"/api/v1/stations/{sid}",
        lambda d: done(evse_of(d, evse_id)),
        timeout_s,
        every_s=0.2,
    )
    return evse_of(detail, evse_id)


def power(evse: dict[str, Any]) -> float:
    return float(evse["power_w"] or 0.0)


def below(watts: float) -> Callable[[dict[str, Any]], bool]:
    return lambda evse: power(evse) < watts


def reconnected_since(moment: datetime) -> Callable[[dict[str, Any]], bool]:
    return lambda detail: bool(detail["connected"]) and when(detail["connected_at"]) > moment


async def reading_after(live: Live, sid: str, evse_id: int, moment: datetime) -> dict[str, Any]:
    """The EVSE once the server holds a power reading taken after `moment`.

    The server provisions its own telemetry (100 W delta, 300 s periodic), so a steady
    charger reports nothing new by itself: ask for a reading (TriggerMessage MeterValues)
    until one arrives. Station timestamps are whole seconds, so only one stamped later
    than `moment` is certainly taken after it.
    """
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        evse = evse_of(await station(live, sid), evse_id)
        at = evse.get("power_measured_at")
        if at is not None and when(at) > moment:
            return evse
        assert asyncio.get_running_loop().time() < deadline, f"{sid}: no reading after {moment}"
        asked = await command(
            live, sid, "trigger_message", {"message": "MeterValues", "evse_id": evse_id}
        )
        assert asked.status_code == 200 and asked.json()["status"] == "Accepted", asked.text
        await asyncio.sleep(0.3)  # cross-process: poll with a deadline


async def charging_power(live: Live, fleet: Fleet, evse_id: int = 1) -> dict[str, float]:
    """Each station's power on `evse_id` once the server has it, by station id."""
    rows = await asyncio.gather(
        *(
            wait_evse(live, s.station_id, evse_id, lambda e: power(e) > 1000, 15)
            for s in fleet.stations
        )
    )
    return {s.station_id: power(row) for s, row in zip(fleet.stations, rows, strict=True)}


async def command(
    live: Live, sid: str, name: str, body: dict[str, Any], timeout_s: float | None = None
) -> httpx.Response:
    params = {"timeout_s": timeout_s} if timeout_s is not None else None
    return await live.api.post(f"/api/v1/stations/{sid}/commands/{name}", json=body, params=params)


async def command_log(live: Live, sid: str, done: Callable[[list[dict[str, Any]]], bool]) -> Any:
    """The station's command log once it shows what `done` wants (it is written in batches)."""
    return await poll(live.api, f"/api/v1/stations/{sid}/command-log", done, 10, every_s=0.2)


def curtail(profile_id: int, limit: float, unit: str = "W", purpose: str = "tx_default") -> Any:
    return {
        "profile_id": profile_id,
        "purpose": purpose,
        "unit": unit,
        "periods": [{"start_s": 0, "limit": limit}],
    }


def set_profile(evse_id: int, profile: dict[str, Any]) -> dict[str, Any]:
    return {"evse_id": evse_id, "profile": profile}


def first_limit(answer: dict[str, Any]) -> float:
    """Period 0 of a GetCompositeSchedule answer (1.6 chargingSchedule, 2.0.1 schedule)."""
    schedule = answer.get("chargingSchedule") or answer["schedule"]
    return float(schedule["chargingSchedulePeriod"][0]["limit"])


# -- faulty chargers ---------------------------------------------------------------------
async def test_accept_but_ignore_answers_accepted_and_keeps_drawing(live: Live) -> None:
    """The operator gets Accepted and the limit shows in the composite schedule, but the
    power never drops, while a healthy charger under the same command has long followed."""
    async with (
        asyncio.timeout(TEST_BUDGET_S),
        fleet_on(live, "IGN-", CHARGERS, 2, faults={Fault.IGNORE: 1.0}) as faulty,
        fleet_on(live, "OK-", CHARGERS, 2) as healthy,
    ):
        assert {s.fault for s in faulty.stations} == {Fault.IGNORE}
        before = {**await charging_power(live, faulty), **await charging_power(live, healthy)}
        ids = list(before)
        answers = await asyncio.gather(
            *(
                command(live, sid, "set_charging_profile", set_profile(1, curtail(41, CURTAILED_W)))
                for sid in ids
            )
        )
        for sid, answer in zip(ids, answers, strict=True):
            assert answer.status_code == 200, (sid, answer.text)
            assert answer.json()["status"] == "Accepted", sid
        sent = datetime.now(UTC)

        # 1.5 kW is under half of what any of these chargers draws: a healthy one drops
        await asyncio.gather(
            *(
                wait_evse(live, s.station_id, 1, below(0.5 * before[s.station_id]), 10)
                for s in healthy.stations
            )
        )
        # had the faulty chargers followed, they would have by now: same command, same delays
        settled = max(datetime.now(UTC), sent + timedelta(seconds=1.5))
        for st in faulty.stations:
            sid = st.station_id
            evse = await reading_after(live, sid, 1, settled)
            assert power(evse) > 0.9 * before[sid], (sid, before[sid], evse)
            schedule = await command(
                live, sid, "get_composite_schedule", {"evse_id": 1, "duration_s": 60, "unit": "W"}
            )
            assert schedule.status_code == 200, schedule.text
            assert first_limit(schedule.json()["response"]) == pytest.approx(CURTAILED_W)


async def test_rejecting_charger_answers_rejected(live: Live) -> None:
    async with (
        asyncio.timeout(TEST_BUDGET_S),
        fleet_on(live, "REJ-", CHARGERS, 2, faults={Fault.REJECT: 1.0}) as fleet,
    ):
        before = await charging_power(live, fleet)
        for sid in before:
            answer = await command(
                live, sid, "set_charging_profile", set_profile(1, curtail(42, CURTAILED_W))
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "Rejected", sid
            logged = await command_log(
                live, sid, lambda rows: any(r["action"] == "SetChargingProfile" for r in rows)
            )
            row = next(r for r in logged if r["action"] == "SetChargingProfile")
            assert (row["outcome"], row["response"]) == ("result", {"status": "Rejected"})
            schedule = await command(
                live, sid, "get_composite_schedule", {"evse_id": 1, "duration_s": 60, "unit": "W"}
            )
            assert first_limit(schedule.json()["response"]) > CURTAILED_W, "nothing was installed"


async def test_slow_charger_times_out_at_the_operator_yet_answers_late(live: Live) -> None:
    """With a short `timeout_s` the operator gets 504 and the command log a timeout; given
    time, the answer does come (duration_ms shows how late). The late charger did apply
    the first limit: a 504 does not mean "not done"."""
    late_s = (2.0, 2.5)
    async with (
        asyncio.timeout(TEST_BUDGET_S),
        fleet_on(
            live, "SLOW-", CHARGERS, 2, faults={Fault.SLOW: 1.0}, slow_result_s=late_s
        ) as fleet,
    ):
        before = await charging_power(live, fleet)
        ids = list(before)
        timed_out = await asyncio.gather(
            *(
                command(
                    live,
                    sid,
                    "set_charging_profile",
                    set_profile(1, curtail(43, CURTAILED_W)),
                    timeout_s=0.5,
                )
                for sid in ids
            )
        )
        for sid, answer in zip(ids, timed_out, strict=True):
            assert answer.status_code == 504, (sid, answer.text)
            assert answer.json()["detail"]["error"] == "timeout"
        for sid in ids:
            logged = await command_log(
                live, sid, lambda rows: any(r["outcome"] == "timeout" for r in rows)
            )
            row = next(r for r in logged if r["outcome"] == "timeout")
            assert row["action"] == "SetChargingProfile"
            assert row["response"] is None
        await asyncio.gather(
            *(wait_evse(live, sid, 1, below(0.5 * before[sid]), 10) for sid in ids)
        )

        answered = await asyncio.gather(
            *(
                command(
                    live, sid, "set_charging_profile", set_profile(1, curtail(43, 2 * CURTAILED_W))
                )
                for sid in ids
            )
        )
        for sid, answer in zip(ids, answered, strict=True):
            assert answer.status_code == 200, (sid, answer.text)
            body = answer.json()
            assert body["status"] == "Accepted"
            assert body["duration_ms"] >= late_s[0] * 1000, (sid, body)


async def test_dropping_charger_disconnects_and_comes_back_with_its_session(live: Live) -> None:
    """Instead of answering, the charger closes the connection: the operator gets 409
    not_connected, the station shows disconnected (or already back on a new connection),
    then it reconnects by itself, without a new boot, its transaction still running."""
    seen: list[tuple[str, str]] = []

    def observe(event: SimEvent) -> None:
        if event.kind in ("connected", "disconnected"):
            seen.append((event.station_id, event.kind))

    async with (
        asyncio.timeout(TEST_BUDGET_S),
        fleet_on(live, "DROP-", CHARGERS, 2, faults={Fault.DROP: 1.0}, observer=observe) as fleet,
    ):
        await charging_power(live, fleet)
        for st in fleet.stations:
            sid = st.station_id
            before = await station(live, sid)
            tx = evse_of(before, 1)["transaction"]
            assert before["connected"] and tx is not None
            answer = await command(
                live, sid, "set_charging_profile", set_profile(1, curtail(44, CURTAILED_W))
            )
            assert answer.status_code == 409, answer.text
            assert answer.json()["detail"]["error"] == "not_connected"

            right_after = await station(live, sid)
            assert not right_after["connected"] or when(right_after["connected_at"]) > when(
                before["connected_at"]
            ), "still connected on the connection it dropped"
            back = await poll(
                live.api,
                f"/api/v1/stations/{sid}",
                reconnected_since(when(before["connected_at"])),
                15,
                every_s=0.2,
            )
            assert back["booted_at"] == before["booted_at"], "no BootNotification on reconnect"
            again = await reading_after(live, sid, 1, when(back["connected_at"]))
            assert again["transaction"]["transaction_id"] == tx["transaction_id"]
            assert power(again) > 1000, again
            logged = await command_log(
                live, sid, lambda rows: any(r["action"] == "SetChargingProfile" for r in rows)
            )
            row = next(r for r in logged if r["action"] == "SetChargingProfile")
            assert row["outcome"] == "not_connected"
            mine = [kind for who, kind in seen if who == sid]
            assert mine[-3:] == ["connected", "disconnected", "connected"], mine


# -- battery storage protection --------------------------------------------------------------
def battery_of(fleet: Fleet, index: int) -> Battery:
    battery = fleet.stations[index].battery
    assert battery is not None
    return battery


async def test_bess_refuses_a_remote_start_outside_its_envelope(live: Live) -> None:
    """1 discharges, 2 charges (datasheet); the protection refuses a start it cannot serve:
    a full pack will not charge, an empty one will not discharge, an overheated one does
    neither. Power asked beyond the rating is clipped to it."""
    async with (
        asyncio.timeout(TEST_BUDGET_S),
        fleet_on(live, "BSTART-", "bess16@Cube 100", 4, sessions=SessionMode.NONE) as fleet,
    ):
        full, empty, hot, normal = (s.station_id for s in fleet.stations)
        battery_of(fleet, 0).soc = 0.97  # above max_soc 0.95
        battery_of(fleet, 1).soc = 0.03  # below min_soc 0.05
        hot_pack = battery_of(fleet, 2)
        hot_pack.temp_c = hot_pack.ambient_c = 46.0  # above max_temp_c 45, and stays there

        refused = [(full, 2), (empty, 1), (hot, 1), (hot, 2), (normal, None), (normal, 3)]
        for sid, evse_id in refused:
            body: dict[str, Any] = {"id_token": "GRID-OPERATOR"}
            if evse_id is not None:
                body["evse_id"] = evse_id
            answer = await command(live, sid, "start_transaction", body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "Rejected", (sid, evse_id)

        discharge = await command(
            live, full, "start_transaction", {"id_token": "GRID-OPERATOR", "evse_id": 1}
        )
        beyond_rating = curtail(45, 2.5 * BESS_RATED_W, unit="W", purpose="tx")
        charge = await command(
            live,
            empty,
            "start_transaction",
            {"id_token": "GRID-OPERATOR", "evse_id": 2, "charging_profile": beyond_rating},
        )
        for answer in (discharge, charge):
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "Accepted"
        exporting = await wait_evse(live, full, 1, lambda e: power(e) < -0.9 * BESS_RATED_W, 10)
        importing = await wait_evse(live, empty, 2, lambda e: power(e) > 0.9 * BESS_RATED_W, 10)
        assert -power(exporting) <= BESS_RATED_W + NOISE_W
        assert power(importing) <= BESS_RATED_W + NOISE_W
        for sid in (hot, normal):
            detail = await station(live, sid)
            assert all(e["transaction"] is None for e in detail["evses"]), detail
            assert all(power(e) == 0.0 for e in detail["evses"]), detail


async def test_bess_protection_clips_a_running_charge(live: Live) -> None:
    """A running charge (connector 2) follows a limit below its rating, is clipped to the
    rating above it, is derated when the pack runs hot and stops when the pack is full;
    the meter samples stored by the server never exceed the allowed power."""
    async with (
        asyncio.timeout(TEST_BUDGET_S),
        fleet_on(live, "BRUN-", "bess16@Cube 100", 3) as fleet,
    ):
        rated, hot, full = (s.station_id for s in fleet.stations)
        await charging_power(live, fleet, evse_id=2)

        async def rating_clips() -> None:
            answer = await command(
                live,
                rated,
                "set_charging_profile",
                set_profile(2, curtail(46, 0.4 * BESS_RATED_W, "W")),
            )
            assert answer.json()["status"] == "Accepted", answer.text
            await wait_evse(live, rated, 2, lambda e: power(e) < 0.45 * BESS_RATED_W, 10)
            answer = await command(
                live,
                rated,
                "set_charging_profile",
                set_profile(2, curtail(46, 2.5 * BESS_RATED_W, "W")),
            )
            assert answer.json()["status"] == "Accepted", answer.text
            back = await wait_evse(live, rated, 2, lambda e: power(e) > 0.9 * BESS_RATED_W, 10)
            samples = await poll(
                live.api,
                f"/api/v1/stations/{rated}/meter-values?evse_id=2",
                lambda rows: any(when(r["ts"]) >= when(back["power_measured_at"]) for r in rows),
                10,
                every_s=0.2,
            )
            drawn = [
                r["value"]
                for r in samples
                if r["measurand"] == "Power.Active.Import" and r["value"] is not None
            ]
            assert drawn and max(drawn) <= BESS_RATED_W + NOISE_W, max(drawn)

        async def heat_derates() -> None:
            pack = battery_of(fleet, 1)
            pack.temp_c = pack.ambient_c = 43.0  # 40–45 °C: 40 % of the rating, falling as it warms
            derated = await wait_evse(
                live, hot, 2, lambda e: power(e) < 0.4 * BESS_RATED_W + NOISE_W, 10
            )
            answer = await command(
                live,
                hot,
                "set_charging_profile",
                set_profile(2, curtail(47, 0.9 * BESS_RATED_W, "W")),
            )
            assert answer.json()["status"] == "Accepted", answer.text
            later = await reading_after(live, hot, 2, datetime.now(UTC) + timedelta(seconds=1.5))
            for evse in (derated, later):
                assert 0.3 * BESS_RATED_W < power(evse) <= 0.4 * BESS_RATED_W + NOISE_W, evse

        async def full_stops() -> None:
            battery_of(fleet, 2).soc = 0.96
            stopped = await wait_evse(
                live, full, 2, lambda e: power(e) == 0.0 and e["status"] == "SuspendedEVSE", 10
            )
            assert stopped["transaction"] is not None, "suspended by the protection, not ended"

        await asyncio.gather(rating_clips(), heat_derates(), full_stops())
