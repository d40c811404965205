"""REST API against a whole running server, with OCPP stations on real sockets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call as call201

from evflex.api.app import warm_up
from tests.api.conftest import Server, running_server


class Station16(Cp16):
    """A 1.6 station that accepts everything and remembers what it was asked."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.got_call = asyncio.Event()
        self.answer_reset = True

    @on("Reset")
    async def on_reset(self, type: str, **kw: Any) -> result16.Reset:
        self.received.append(("Reset", {"type": type}))
        self.got_call.set()
        if not self.answer_reset:
            await asyncio.Event().wait()  # never answer: the CSMS must time out
        return result16.Reset(status="Accepted")

    @on("SetChargingProfile")
    async def on_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **kw: Any
    ) -> result16.SetChargingProfile:
        self.received.append(("SetChargingProfile", cs_charging_profiles))
        return result16.SetChargingProfile(status="Accepted")


async def _boot16(station: Station16) -> None:
    await station.call(
        call16.BootNotification(
            charge_point_vendor="Acme", charge_point_model="AC22", firmware_version="1.2.3"
        )
    )


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def test_requests_without_valid_token_are_refused(server: Server) -> None:
    base = f"http://127.0.0.1:{server.app.ports.http}"
    async with httpx.AsyncClient(base_url=base) as anon:
        assert (await anon.get("/api/v1/fleet")).status_code == 401
        bad = await anon.get("/api/v1/fleet", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        assert "invalid" in bad.json()["detail"]
    assert (await server.http.get("/api/v1/fleet")).status_code == 200


async def test_warm_up_reaches_routing_and_auth_and_leaves_the_api_serving(
    server: Server,
) -> None:
    """The start-up warm-up (run by App.start) walks every router (404) and the
    bearer-token check (401) in-process; the API answers as before afterwards."""
    assert await warm_up(server.app.api) == [404, 401]
    assert (await server.http.get("/api/v1/fleet")).status_code == 200


async def test_station_registration_rules(server: Server) -> None:
    await server.register("CP-1")
    dup = await server.http.post("/api/v1/stations", json={"id": "CP-1", "password": "x" * 20})
    assert dup.status_code == 409
    weak = await server.http.post("/api/v1/stations", json={"id": "CP-2", "password": "short"})
    assert weak.status_code == 422
    bad_id = await server.http.post("/api/v1/stations", json={"id": "a:b", "password": "x" * 20})
    assert bad_id.status_code == 422
    generated = await server.http.post("/api/v1/stations", json={"id": "CP-3"})
    assert generated.status_code == 201
    password = generated.json()["password"]
    assert 16 <= len(password) <= 40
    async with server.connect("CP-3", password=password) as ws:
        station = Station16("CP-3", ws)
        task = asyncio.create_task(station.start())
        await _boot16(station)
        task.cancel()
    listed = (await server.http.get("/api/v1/stations")).json()
    assert [s["id"] for s in listed] == ["CP-1", "CP-3"]


async def test_live_state_and_history_of_a_charging_station(server: Server) -> None:
    await server.register("CP-1")
    async with server.connect("CP-1") as ws:
        station = Station16("CP-1", ws)
        task = asyncio.create_task(station.start())
        await _boot16(station)
        tx = await station.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG", meter_start=1000, timestamp=_now()
            )
        )
        await station.call(
            call16.StatusNotification(
                connector_id=1, error_code="NoError", status="Charging", timestamp=_now()
            )
        )
        measured = _now()
        await station.call(
            call16.MeterValues(
                connector_id=1,
                transaction_id=tx.transaction_id,
                meter_value=[
                    {
                        "timestamp": measured,
                        "sampledValue": [
                            {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
                            {
                                "value": "1500",
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "Wh",
                            },
                        ],
                    }
                ],
            )
        )
        detail = (await server.http.get("/api/v1/stations/CP-1")).json()
        fleet = (await server.http.get("/api/v1/fleet")).json()
        task.cancel()
    assert detail["connected"] is True
    assert detail["protocol"] == "ocpp1.6"
    assert (detail["vendor"], detail["model"], detail["firmware"]) == ("Acme", "AC22", "1.2.3")
    evse = detail["evses"][0]
    assert evse["evse_id"] == 1 and evse["status"] == "Charging"
    assert evse["power_w"] == 7400.0
    assert evse["power_measured_at"].startswith(measured[:19])
    assert evse["transaction"]["transaction_id"] == str(tx.transaction_id)
    assert fleet["stations_connected"] == 1 and fleet["power_w"] == 7400.0
    assert fleet["evses_charging"] == 1
    await server.app.recorder.flush()
    rows = (await server.http.get("/api/v1/stations/CP-1/meter-values")).json()
    assert {(r["measurand"], r["value"]) for r in rows} == {
        ("Power.Active.Import", 7.4),
        ("Energy.Active.Import.Register", 1500.0),
    }
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    empty = await server.http.get("/api/v1/stations/CP-1/meter-values", params={"from": later})
    assert empty.status_code == 200 and empty.json() == []
    backwards = await server.http.get(
        "/api/v1/stations/CP-1/meter-values", params={"from": later, "to": measured}
    )
    assert backwards.status_code == 422
    disconnected = (await server.http.get("/api/v1/stations/CP-1")).json()
    # the socket closed when the block ended; state (power, transaction) is kept
    assert disconnected["evses"][0]["transaction"] is not None


async def test_remote_command_round_trip_and_errors(server: Server) -> None:
    await server.register("CP-1")
    offline = await server.http.post("/api/v1/stations/CP-1/commands/reset", json={})
    assert offline.status_code == 409
    async with server.connect("CP-1") as ws:
        station = Station16("CP-1", ws)
        task = asyncio.create_task(station.start())
        await _boot16(station)
        ok = await server.http.post("/api/v1/stations/CP-1/commands/reset", json={"kind": "hard"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "Accepted"
        assert station.received[-1] == ("Reset", {"type": "Hard"})
        unknown = await server.http.post("/api/v1/stations/CP-1/commands/explode", json={})
        assert unknown.status_code == 404 and "explode" in unknown.json()["detail"]
        invalid = await server.http.post(
            "/api/v1/stations/CP-1/commands/reset", json={"kind": "gentle"}
        )
        assert invalid.status_code == 422
        station.answer_reset = False
        timeout = await server.http.post(
            "/api/v1/stations/CP-1/commands/reset", params={"timeout_s": 0.3}, json={}
        )
        assert timeout.status_code == 504
        assert timeout.json()["detail"]["error"] == "timeout"
        task.cancel()
    await server.app.recorder.flush()
    log = (await server.http.get("/api/v1/stations/CP-1/command-log")).json()
    # telemetry provisioning also talks to the station on boot; count the resets
    outcomes = sorted(entry["outcome"] for entry in log if entry["action"] == "Reset")
    assert outcomes == ["result", "timeout"]


async def test_fleet_wide_charging_profile(server: Server) -> None:
    ids = ["CP-A", "CP-B", "CP-C"]
    for sid in ids:
        await server.register(sid)
    stations: list[Station16] = []
    async with (
        server.connect(ids[0]) as a,
        server.connect(ids[1]) as b,
        server.connect(ids[2], "ocpp2.0.1") as c,
    ):
        for sid, ws in zip(ids[:2], (a, b), strict=True):
            st = Station16(sid, ws)
            stations.append(st)
            asyncio.create_task(st.start())  # noqa: RUF006 - ends with the socket
            await _boot16(st)
        st201 = Cp201(ids[2], c)
        asyncio.create_task(st201.start())  # noqa: RUF006
        await st201.call(
            call201.BootNotification(
                charging_station={"vendor_name": "V", "model": "M"}, reason="PowerUp"
            )
        )
        r = await server.http.post(
            "/api/v1/fleet/commands/set_charging_profile",
            json={
                "evse_id": 1,
                "profile": {
                    "profile_id": 9,
                    "stack_level": 5,
                    "purpose": "tx_default",
                    "unit": "W",
                    "periods": [{"start_s": 0, "limit": 3700}],
                },
            },
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stations"] == 3
    # the 2.0.1 library station has no SetChargingProfile handler: it answers NotImplemented
    assert body["by_status"] == {"Accepted": 2, "call_error": 1}
    for st in stations:
        kind, profile = st.received[-1]
        assert kind == "SetChargingProfile"
        # the ocpp library hands handlers snake_case keys
        assert profile["charging_profile_purpose"] == "TxDefaultProfile"
        assert profile["charging_schedule"]["charging_schedule_period"] == [
            {"start_period": 0, "limit": 3700}
        ]


async def test_metrics_expose_gateway_counters(server: Server) -> None:
    await server.register("CP-1")
    async with server.connect("CP-1") as ws:
        station = Station16("CP-1", ws)
        task = asyncio.create_task(station.start())
        await _boot16(station)
        await station.call(call16.Heartbeat())
        text = (await server.http.get("/metrics")).text
        task.cancel()
    assert 'evflex_ocpp_connections{protocol="ocpp1.6"} 1.0' in text
    assert (
        'evflex_ocpp_messages_total{action="Heartbeat",direction="in",protocol="ocpp1.6"} 1.0'
    ) in text
    assert "evflex_ocpp_handler_seconds_bucket" in text


async def test_state_survives_a_restart(db_url: str) -> None:
    async with running_server(db_url) as srv:
        await srv.register("CP-1")
        async with srv.connect("CP-1") as ws:
            station = Station16("CP-1", ws)
            task = asyncio.create_task(station.start())
            await _boot16(station)
            first = await station.call(
                call16.StartTransaction(
                    connector_id=1, id_tag="TAG", meter_start=0, timestamp=_now()
                )
            )
            task.cancel()
    async with running_server(db_url) as srv:
        detail = (await srv.http.get("/api/v1/stations/CP-1")).json()
        assert detail["vendor"] == "Acme"
        assert detail["evses"][0]["transaction"]["transaction_id"] == str(first.transaction_id)
        async with srv.connect("CP-1") as ws:
            station = Station16("CP-1", ws)
            task = asyncio.create_task(station.start())
            # a booted station may reconnect without a new BootNotification
            second = await station.call(
                call16.StartTransaction(
                    connector_id=2, id_tag="TAG", meter_start=0, timestamp=_now()
                )
            )
            task.cancel()
        assert second.transaction_id == first.transaction_id + 1


async def test_metrics_expose_the_grid_engine(server: Server) -> None:
    created = await server.http.post("/api/v1/services", json={"type": "fcr", "bid_w": 10_000})
    assert created.status_code in (200, 201), created.text
    (await server.http.post("/api/v1/grid/frequency", json={"hz": 49.9})).raise_for_status()
    text = (await server.http.get("/metrics")).text
    assert "evflex_grid_services_active 1.0" in text
    assert "evflex_grid_frequency_hz 49.9" in text
    assert "evflex_grid_feed_ok " in text
    evaluations = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("evflex_grid_evaluations_total")
    )
    assert evaluations >= 2  # the activation and the frequency sample
