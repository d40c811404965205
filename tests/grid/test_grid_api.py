"""The grid REST API on a real server: input validation, service lifecycle, state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.api.conftest import Server, running_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(f"sqlite+aiosqlite:///{tmp_path}/evflex.db") as srv:
        yield srv


@pytest.mark.parametrize(
    "body",
    [
        {"hz": 46.0},
        {"hz": 53.5},
        {"hz": "fifty"},
        {"ts": "2026-01-01T00:00:00Z"},
        {"hz": 50.0, "ts": "yesterday"},
        [],
        "50.0",
    ],
)
async def test_implausible_or_invalid_frequency_is_422(server: Server, body: object) -> None:
    r = await server.http.post("/api/v1/grid/frequency", json=body)
    assert r.status_code == 422, r.text


async def test_frequency_batches_are_accepted_once(server: Server) -> None:
    t0 = datetime.now(UTC)
    body = [
        {"hz": 49.95 + i / 100, "ts": (t0 - timedelta(seconds=3 - i)).isoformat()} for i in range(3)
    ]
    r = await server.http.post("/api/v1/grid/frequency", json=body)
    assert r.json() == {"accepted": 3, "rejected": 0}
    r = await server.http.post("/api/v1/grid/frequency", json=body)  # a retried batch
    assert r.json() == {"accepted": 0, "rejected": 3}
    single = await server.http.post("/api/v1/grid/frequency", json={"hz": 50.01})
    assert single.json() == {"accepted": 1, "rejected": 0}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"type": "fcr", "bid_w": -5}, "greater than 0"),
        ({"type": "fcr"}, "bid_w"),
        ({"type": "afrr", "bid_w": 5}, "type"),
        ({"type": "droop_curve", "points": [[49.8, 1000], [50.2, -1000]]}, "destabilising"),
        ({"type": "droop_curve", "points": [[49.8, 1000]]}, "at least 2"),
        ({"type": "ffr", "capacity_w": 1000, "trigger_hz": 49.9}, "FFR trigger"),
        ({"type": "setpoint", "target_w": 1000, "until": "2020-01-01T00:00:00Z"}, "valid_from"),
    ],
)
async def test_bad_service_requests_are_422_with_a_reason(
    server: Server, body: object, reason: str
) -> None:
    r = await server.http.post("/api/v1/services", json=body)
    assert r.status_code == 422, r.text
    assert reason in r.text


async def test_service_lifecycle_and_state(server: Server) -> None:
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    bodies = [
        {"type": "fcr", "bid_w": 1_000_000},
        {"type": "setpoint", "target_w": 0, "until": until},
        {"type": "droop_curve", "points": [[49.8, -1_000_000], [50.2, 1_000_000]]},
        {"type": "ffr", "capacity_w": 500_000, "trigger_hz": 49.6},
    ]
    ids = []
    for body in bodies:
        r = await server.http.post("/api/v1/services", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["type"] == body["type"] and r.json()["active"]
        ids.append(r.json()["id"])
    assert len(set(ids)) == 4
    state = (await server.http.get("/api/v1/grid/state")).json()
    assert [s["id"] for s in state["services"]] == ids
    assert state["feed"]["status"] == "no_data" and state["feed"]["ok"] is False
    assert state["baseline_w"] == 0.0 and state["limits_in_force"] == 0
    assert set(state["flexibility"]) == {"up_w", "down_w", "down_hard_w", "p90_down_w", "p90_up_w"}
    got = (await server.http.get(f"/api/v1/services/{ids[0]}")).json()
    assert got["params"]["bid_w"] == 1_000_000
    deleted = await server.http.delete(f"/api/v1/services/{ids[0]}")
    assert deleted.status_code == 200 and deleted.json()["active"] is False
    state = (await server.http.get("/api/v1/grid/state")).json()
    assert ids[0] not in [s["id"] for s in state["services"]]
    csv_text = (await server.http.get(f"/api/v1/services/{ids[1]}/record.csv")).text
    assert csv_text.startswith("ts,freq_hz,feed,delta_w,target_w,measured_w,baseline_w")


async def test_unknown_services_are_404_and_auth_is_required(server: Server) -> None:
    for method, path in [
        ("GET", "/api/v1/services/svc-99"),
        ("DELETE", "/api/v1/services/svc-99"),
        ("GET", "/api/v1/services/svc-99/record.csv"),
        ("GET", "/api/v1/services/svc-99/audit"),
    ]:
        r = await server.http.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
    r = await server.http.get("/api/v1/grid/state", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_mqtt_feed_is_added_only_when_a_broker_is_configured() -> None:
    from evflex.app import frequency_sources
    from evflex.config import Settings
    from evflex.grid.mqtt import MqttSource
    from evflex.grid.push import PushSource

    push = PushSource()
    assert frequency_sources(Settings(), push) == [push]
    sources = frequency_sources(Settings(grid_mqtt_host="broker", grid_mqtt_port=1884), push)
    assert sources[0] is push and isinstance(sources[1], MqttSource)
    assert (sources[1].host, sources[1].port, sources[1].topic) == (
        "broker",
        1884,
        "evflex/grid/frequency",
    )


async def test_record_of_an_earlier_run_is_served_from_the_database(server: Server) -> None:
    store = server.app.grid_store
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for i in range(3):
        store.record(
            {
                "service_id": "svc-earlier",
                "ts": t0 + timedelta(seconds=i),
                "freq_hz": None if i == 0 else 49.9,
                "feed": "stale" if i == 0 else "ok",
                "delta_w": -500.0 * i,
                "target_w": 10_000.0 - 500.0 * i,
                "measured_w": 10_000.0,
                "baseline_w": 10_000.0,
            }
        )
    assert await store.flush()
    r = await server.http.get("/api/v1/services/svc-earlier/record.csv")
    assert r.status_code == 200, r.text
    assert r.text.splitlines() == [
        "ts,freq_hz,feed,delta_w,target_w,measured_w,baseline_w",
        "2026-01-01T12:00:00+00:00,,stale,0.0,10000.0,10000.0,10000.0",
        "2026-01-01T12:00:01+00:00,49.9000,ok,-500.0,9500.0,10000.0,10000.0",
        "2026-01-01T12:00:02+00:00,49.9000,ok,-1000.0,9000.0,10000.0,10000.0",
    ]
