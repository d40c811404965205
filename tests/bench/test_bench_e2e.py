"""Every scenario end to end against a real `evflex serve` child: 20 stations, ~2 s.

One server is shared by the scenarios (each registers its own stations) to keep
this fast; processes are not pinned, so the test runner keeps both cores.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evflex.bench import scenarios  # noqa: F401  (registers the scenarios)
from evflex.bench.cli import bench_app
from evflex.bench.runner import SCENARIOS, BenchOptions, BenchServer, bench_server, run_scenario

OPTIONS = BenchOptions(
    stations=20,
    rate_hz=5.0,
    duration_s=1.0,
    warmup_s=0.3,
    repeats=2,
    connect_concurrency=10,
    timeout_s=20.0,
    drain_s=2.0,
    settle_s=0.1,
    server_cpu=None,
    loader_cpu=None,
)


@pytest.fixture
async def target() -> AsyncIterator[BenchServer]:
    async with bench_server(OPTIONS) as server:
        yield server


def test_builtin_scenarios_are_registered() -> None:
    assert {"telemetry", "telemetry-max", "broadcast", "storm", "fcr"} <= set(SCENARIOS)


async def test_all_scenarios_against_the_server(target: BenchServer) -> None:
    pid = target.server.pid

    tele = (await run_scenario("telemetry", OPTIONS, target))["metrics"]
    assert tele["connected"] == tele["booted"] == tele["transactions_started"] == 20
    assert tele["scheduled_in_window"] == pytest.approx(100, abs=1)  # 20 × 5 Hz × 1 s
    assert tele["lost_in_window"] == 0 and tele["call_errors"] == 0
    assert tele["ack_p99_ms"] is not None and tele["ack_p99_ms"] > 0
    assert tele["server_rss_idle_mb"] > 0
    # persistence: 2 sampled values per message written, nothing left behind
    assert tele["store_rows_written_per_msg"] is not None
    assert tele["store_rows_written_per_msg"] >= 1
    assert tele["store_rows_dropped"] == 0
    # the writer thread's CPU, from /metrics: it wrote ~200 rows, so it spent some
    assert tele["store_writer_cpu_us_per_msg"] is not None
    assert tele["store_writer_cpu_us_per_msg"] > 0
    assert tele["store_catchup_s"] is not None

    sat = (await run_scenario("telemetry-max", OPTIONS, target))["metrics"]
    assert sat["acked_msgs"] > 20 and sat["call_errors"] == 0
    assert sat["unanswered_total"] == 0

    cast = (await run_scenario("broadcast", OPTIONS, target))["metrics"]
    assert cast["all_accepted"] is True and cast["accepted_min"] == 20
    assert cast["server_duration_ms_median"] > 0
    assert cast["http_roundtrip_ms_median"] >= cast["server_duration_ms_median"]

    storm = (await run_scenario("storm", OPTIONS, target))["metrics"]
    assert storm["booted"] == 20 and storm["connect_errors"] == 0
    assert storm["all_accepted_s"] is not None

    # fcr (evflex.bench.grid) is covered by tests/bench/test_bench_grid.py

    assert target.server.alive() and target.server.pid == pid


def test_cli_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "storm.json"
    result = CliRunner().invoke(
        bench_app,
        [
            "storm",
            "--stations",
            "10",
            "--concurrency",
            "5",
            "--server-cpu",
            "-1",
            "--loader-cpu",
            "-1",
            "--timeout",
            "20",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["scenario"] == "storm"
    assert data["median"]["booted"] == 10, data["median"]
    assert data["runs"][0]["loader_pinned_cpu"] is None


def test_cli_lists_scenarios() -> None:
    result = CliRunner().invoke(bench_app, ["list"])
    assert result.exit_code == 0
    assert "telemetry-max" in result.output and "storm" in result.output
