"""Results: medians across runs, JSON output, the printed table, profile folding."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from evflex.bench.cli import noisy
from evflex.bench.profile import summarize_collapsed
from evflex.bench.report import build_report, median_metrics, print_report, write_json
from evflex.bench.runner import Metrics
from evflex.bench.server import spawn_pinned, stop_process, usable_cpus


def _run(**metrics: Any) -> dict[str, Any]:
    return {"metrics": metrics, "notes": [], "profile": None}


def test_median_metrics_keywise() -> None:
    runs: list[Metrics] = [
        {"msg_per_s": 100.0, "n": 5, "p99": 1.0, "kind": "server", "ok": True},
        {"msg_per_s": 300.0, "n": 5, "p99": None, "kind": "server", "ok": True},
        {"msg_per_s": 200.0, "n": 7, "p99": 3.0, "kind": "loader", "ok": True},
    ]
    m = median_metrics(runs)
    assert m["msg_per_s"] == 200.0
    assert m["n"] == 5
    assert m["p99"] == 3.0  # None ("infinite") sorts above every number
    assert m["kind"] == "varies: server / server / loader"
    assert m["ok"] is True


def test_median_of_mostly_infinite_is_none() -> None:
    assert median_metrics([{"p99": None}, {"p99": None}, {"p99": 1.0}])["p99"] is None


def test_median_with_missing_key() -> None:
    m = median_metrics([{"a": 1}, {"a": 3, "b": 2.0}])
    assert m["a"] == 2
    assert m["b"] is None  # absent in one run: treated like "not reached"


def test_report_json_round_trip(tmp_path: Path) -> None:
    report = build_report(
        "telemetry",
        {"stations": 20},
        [_run(msg_per_s=10.0, ack_p99_ms=None), _run(msg_per_s=30.0, ack_p99_ms=2.0)],
    )
    path = write_json(report, tmp_path / "out" / "r.json")
    data = json.loads(path.read_text())
    assert data["scenario"] == "telemetry"
    assert data["options"] == {"stations": 20}
    assert data["median"]["msg_per_s"] == 20.0
    assert data["runs"][0]["metrics"]["ack_p99_ms"] is None
    assert data["machine"]["nproc"] >= 1
    assert data["machine"]["python"]


def test_table_prints_runs_median_and_notes() -> None:
    runs = [_run(msg_per_s=10.0, lost=0), _run(msg_per_s=30.0, lost=1)]
    runs[1]["notes"] = ["the machine was busy"]
    report = build_report("storm", {}, runs)
    out = io.StringIO()
    print_report(report, Console(file=out, width=200))
    text = out.getvalue()
    assert "msg_per_s" in text and "median" in text and "20" in text
    assert "the machine was busy" in text


def test_summarize_collapsed_self_inclusive_and_entries() -> None:
    loop = 'process 1:"python";main (cli.py:1);Runner.run (asyncio/runners.py:86)'
    text = "\n".join(
        [
            f"{loop};handle (ocpp/session.py:10);send (s.py:3) 6",
            f"{loop};handle (ocpp/session.py:10) 2",
            f"{loop} 1",  # the loop itself: native code (epoll, sockets)
            "thread 2;Thread._bootstrap (threading.py:1);Thread.run (threading.py:2);"
            "worker (/x/site-packages/aiosqlite/core.py:48) 1",
            "garbage line",
        ]
    )
    p = summarize_collapsed(text)
    assert p["samples"] == 10
    own = {e["function"]: e["share"] for e in p["self"]}
    inclusive = {e["function"]: e["share"] for e in p["inclusive"]}
    entries = {e["function"]: e["share"] for e in p["by_entry"]}
    assert own["send (s.py:3)"] == 0.6
    assert own["worker (aiosqlite/core.py:48)"] == 0.1  # site-packages prefix dropped
    assert inclusive["handle (ocpp/session.py:10)"] == 0.8
    assert "main (cli.py:1)" not in inclusive  # plumbing above the loop is left out
    assert entries == {
        "handle (ocpp/session.py:10)": 0.8,
        "<event loop, native: epoll, sockets, picows framing>": 0.1,
        "[thread] worker (aiosqlite/core.py:48)": 0.1,
    }


def test_spawned_server_gets_its_core_not_the_loaders(tmp_path: Path) -> None:
    cpus = sorted(usable_cpus())
    pinned = spawn_pinned(["sleep", "5"], cpus[-1], tmp_path / "a.log")
    free = spawn_pinned(["sleep", "5"], None, tmp_path / "b.log")
    try:
        assert os.sched_getaffinity(pinned.pid) == {cpus[-1]}
        assert os.sched_getaffinity(free.pid) == set(cpus)
    finally:
        stop_process(pinned)
        stop_process(free)


def test_noisy_runs_are_recognised() -> None:
    record: dict[str, Any] = {"metrics": {"background_cpu_cores": 0.5}}
    assert noisy(record, 0.3)
    assert not noisy(record, 0.6)
    assert not noisy(record, None)
    assert not noisy({"metrics": {}}, 0.3)
