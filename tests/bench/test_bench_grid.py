"""The issue-5 bench scenarios (evflex.bench.grid) end to end, small and fast.

Each scenario gets its own `evflex serve` child: `fcr` with 20 loadgen stations,
`fcr-delivery` with 20 simulated stations and a 5 s hold. Processes are not
pinned, so the test runner keeps both cores.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from evflex.bench import cli  # noqa: F401  (registers every scenario, as `evflex bench` does)
from evflex.bench.grid import (
    DeliveryParams,
    FcrParams,
    Row,
    _parse,
    delivery_metrics,
    engine_timings,
    parse_record,
)
from evflex.bench.runner import SCENARIOS, BenchOptions, BenchServer, bench_server, run_scenario

OPTIONS = BenchOptions(
    stations=20,
    connect_concurrency=10,
    timeout_s=20.0,
    settle_s=0.1,
    server_cpu=None,
    loader_cpu=None,
)


@pytest.fixture
async def target() -> AsyncIterator[BenchServer]:
    async with bench_server(OPTIONS) as server:
        yield server


def test_grid_scenarios_are_registered_and_fcr_left_scenarios() -> None:
    from evflex.bench import scenarios

    assert {"fcr", "fcr-delivery", "fcr-engine"} <= set(SCENARIOS)
    assert SCENARIOS["fcr"].__module__ == "evflex.bench.grid"
    assert not hasattr(scenarios, "fcr")


def test_options_parse_from_set_strings() -> None:
    p = _parse(DeliveryParams, {"hold_s": "5", "faults": "ignore:5", "seed": "3"})
    assert (p.hold_s, p.faults, p.seed) == (5.0, "ignore:5", 3)
    assert _parse(FcrParams, {"engine_only": "yes"}).engine_only is True
    with pytest.raises(ValueError, match="unknown --set keys"):
        _parse(FcrParams, {"hold": "1"})


def test_delivery_metrics_on_a_known_record() -> None:
    bid, base, step = 1000.0, 2000.0, 100.0
    target = base - bid
    rows = [Row(99.0, base, base, base)]  # before the step: ignored
    rows += [Row(step + 0.5 + i, target, base - min(bid, 250.0 * (i + 1)), base) for i in range(4)]
    # from step + 4.5 s: at the target, except one row 10 % off
    rows += [Row(step + 4.5 + i, target, target, base) for i in range(10)]
    rows[8] = replace(rows[8], measured_w=target * 1.1)
    m = delivery_metrics("r", rows, step, bid, reach_s=5.0, hold_s=8.0)
    assert m["r_t95_s"] == 3.5  # the 4th row after the step is the first at 100 %
    assert m["r_reached_95pct_in_time"] is True
    assert m["r_change_pct_of_bid_at_reach"] == 100.0
    assert m["r_hold_rows"] == 8  # ts in (105, 113]
    assert m["r_hold_within_5pct_of_target_share"] == 0.875
    assert m["r_hold_error_pct_of_target_worst"] == 10.0
    late = delivery_metrics("r", rows, step, bid, reach_s=3.0, hold_s=8.0)
    assert late["r_reached_95pct_in_time"] is False
    never = delivery_metrics("r", rows[:3], step, bid, reach_s=5.0, hold_s=8.0)
    assert never["r_t95_s"] is None and never["r_hold_rows"] == 0


def test_parse_record_reads_the_service_csv() -> None:
    text = (
        "ts,freq_hz,feed,delta_w,target_w,measured_w,baseline_w\n"
        "2026-01-01T12:00:00+00:00,49.8000,ok,-500.0,1500.0,1510.5,2000.0\n"
    )
    (row,) = parse_record(text)
    assert (row.target_w, row.measured_w, row.baseline_w) == (1500.0, 1510.5, 2000.0)
    assert row.ts == 1767268800.0


async def test_engine_timings_cover_every_unit() -> None:
    m = await engine_timings(units=300, rounds=2)
    assert m["engine_units"] == m["engine_step_commands"] == 300
    names = ["step_eval", "step_handover", "steady_eval", "half_eval", "release_eval"]
    names += ["targets", "tick", "replan"]
    for name in names:
        median, worst = m[f"engine_{name}_ms_median"], m[f"engine_{name}_ms_max"]
        assert isinstance(median, float) and isinstance(worst, float)
        assert 0 < median <= worst < 5_000
    assert (
        isinstance(m["engine_dispatch_us_per_cmd"], float) and m["engine_dispatch_us_per_cmd"] > 0
    )


async def test_fcr_against_the_server(target: BenchServer) -> None:
    options = replace(
        OPTIONS,
        extra={
            "repeats": "2",
            "settle_s": "0.5",
            "engine_units": "200",
            "engine_rounds": "2",
            "answer_delay_ms": "100",  # the stations answer late: every answer still counts
            "loader_spin": "false",  # not the default: the loader sleeps between frames
        },
    )
    m = (await run_scenario("fcr", options, target))["metrics"]
    assert m["connected"] == m["booted"] == m["transactions_started"] == 20
    assert m["fcr_bid_w"] == pytest.approx(m["fleet_power_w"]) and m["fleet_power_w"] > 0
    assert m["fcr_affected"] == 20  # bid = fleet power: every charging station pauses
    for prefix in ("fcr_set", "fcr_release"):
        assert m[f"{prefix}_samples"] == 40 and m[f"{prefix}_missing"] == 0
        assert m[f"{prefix}_stray"] == 0
        assert 0 < m[f"{prefix}_p50_ms"] <= m[f"{prefix}_p99_ms"] <= m[f"{prefix}_max_ms"] < 10_000
        # the HTTP answer may come before or after the frames, but never after 10 s
        assert 0 < m[f"{prefix}_http_ms_median"] < 10_000
    assert m["engine_units"] == m["engine_step_commands"] == 200
    assert m["audit_outcomes"] == "Accepted=80"
    assert target.server.alive()


async def test_fcr_delivery_against_the_server(target: BenchServer, tmp_path: Path) -> None:
    # a server of its own: evflex's fleet power keeps the last power of stations that
    # have disconnected, so the fcr scenario's stations would count as "measured" here
    csv_path = tmp_path / "record.csv"
    options = replace(
        OPTIONS,
        extra={
            "hold_s": "5",
            "reach_s": "4",
            "pre_s": "1.5",
            "delay_min_s": "0.2",
            "delay_max_s": "0.5",
            "faults": "",  # faulty chargers are drawn per run; this checks the timing
            "csv": str(csv_path),
        },
    )
    record = await run_scenario("fcr-delivery", options, target)
    d = record["metrics"]
    assert d["booted"] == d["charging"] == 20
    assert d["fcr_bid_w"] == pytest.approx(0.5 * d["fleet_power_w"], rel=1e-6)
    assert d["fleet_power_w"] == pytest.approx(d["sim_power_w"], rel=0.05)
    assert d["record_csv"] == str(csv_path) and any(str(csv_path) in n for n in record["notes"])
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == d["record_rows"] >= 8  # 1.5 s before, 4 + 5 s after the step
    assert {r["freq_hz"] for r in rows[-5:]} == {"49.8000"}
    for prefix in ("record", "sim"):
        assert 1 <= d[f"{prefix}_hold_rows"] <= 6
        assert 0.0 <= d[f"{prefix}_hold_within_5pct_of_target_share"] <= 1.0
        # 0.2–0.5 s delays and no faulty charger: well in time
        assert d[f"{prefix}_t95_s"] is not None and 0 < d[f"{prefix}_t95_s"] <= 4
        assert d[f"{prefix}_hold_change_pct_of_bid_median"] > 80
    assert 0 < d["stations_commanded"] < 20  # half the power: not every station
    assert d["faulty_ignore"] + d["faulty_reject"] + d["faulty_other"] == 0
    assert target.server.alive()
