"""Session needs and EVSE specs: what the grid allocation must respect (issue 5, point 3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from evflex.control.units import EvseSpec
from evflex.fleet.events import StationConnected, TransactionStarted, TransactionStopped
from evflex.fleet.model import Protocol
from tests.api.conftest import Server


def _session(server: Server, station_id: str = "CP-1") -> None:
    """A connected station with a running session, through the domain's own events."""
    now = datetime.now(UTC)
    server.app.hub(StationConnected(station_id, Protocol.OCPP16, now))
    server.app.hub(TransactionStarted(station_id, 1, "7", now, "TAG", 0.0))


async def test_a_driver_states_departure_and_need(server: Server) -> None:
    _session(server)
    departure = datetime.now(UTC) + timedelta(hours=2)
    r = await server.http.put(
        "/api/v1/stations/CP-1/evses/1/session",
        json={"departure": departure.isoformat(), "energy_need_wh": 12_000, "v2g": False},
    )
    assert r.status_code == 200, r.text
    needs = server.app.fleet.stations["CP-1"].evses[1].needs
    assert needs is not None and needs.source == "api"
    assert needs.departure_at == departure and needs.energy_wh == 12_000
    got = (await server.http.get("/api/v1/stations/CP-1/evses/1/session")).json()
    assert got["energy_need_wh"] == 12_000 and got["source"] == "api"
    # the needs end with the session
    server.app.hub(TransactionStopped("CP-1", "7", datetime.now(UTC), 5_000.0, "Local"))
    assert server.app.fleet.stations["CP-1"].evses[1].needs is None
    assert (await server.http.get("/api/v1/stations/CP-1/evses/1/session")).status_code == 404


async def test_bad_session_requests_get_4xx_with_a_reason(server: Server) -> None:
    url = "/api/v1/stations/CP-1/evses/1/session"
    assert (await server.http.put(url, json={})).status_code == 404  # unknown station
    now = datetime.now(UTC)
    server.app.hub(StationConnected("CP-1", Protocol.OCPP16, now))
    server.app.hub(TransactionStarted("CP-1", 1, "7", now))
    server.app.hub(TransactionStopped("CP-1", "7", now, 0.0, "Local"))
    r = await server.http.put(url, json={})
    assert r.status_code == 409 and "no session" in r.json()["detail"]
    _session(server)
    r = await server.http.put(url, json={"departure": "2030-01-01T18:00:00"})
    assert r.status_code == 422 and "UTC offset" in r.text
    r = await server.http.put(url, json={"energy_need_wh": -1})
    assert r.status_code == 422


async def test_an_evse_spec_reaches_the_allocator(server: Server) -> None:
    _session(server)
    r = await server.http.put(
        "/api/v1/stations/CP-1/evses/1/spec",
        json={"max_power_w": 22_000, "phases": 3, "max_discharge_w": 11_000},
    )
    assert r.status_code == 200, r.text
    spec = server.app.grid.specs[("CP-1", 1)]
    assert isinstance(spec, EvseSpec)
    assert (spec.max_w, spec.max_discharge_w) == (22_000, 11_000)
    bad = {
        "bess": {
            "capacity_wh": 1,
            "max_charge_w": 1,
            "max_discharge_w": 1,
            "soc_min_pct": 90,
            "soc_max_pct": 10,
        }
    }
    r = await server.http.put("/api/v1/stations/CP-1/evses/1/spec", json=bad)
    assert r.status_code == 422 and "soc_min_pct" in r.text
    r = await server.http.put("/api/v1/stations/CP-1/evses/9/spec", json={})
    assert r.status_code == 404 and "no EVSE 9" in r.json()["detail"]
