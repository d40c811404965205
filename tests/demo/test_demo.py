"""`evflex demo --headless` end to end, as a newcomer runs it (a subprocess, real sockets).

The run is the one CI makes (`--duration 30`): the fleet connects, an FCR service
is activated with a synthetic step to 49.8 Hz and released before exit, and the
delivery figures are printed. The test recomputes those figures from the rows the
demo stored in its database, so they cannot be made up, and checks they are plausible.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from evflex.control.loop import RecordRow
from evflex.demo import delivery_figures
from evflex.store import db
from evflex.store.grid import GridStore
from evflex.store.tables import grid_audit

STATIONS = 40


def figure(out: str, name: str) -> str:
    """The value cell of row `name` of a printed table."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) >= 3 and cells[1] == name:
            return cells[2]
    raise AssertionError(f"no {name!r} row in:\n{out}")


def number(text: str) -> float:
    match = re.match(r"-?[\d.]+", text)
    assert match, text
    return float(match.group())


async def stored(db_path: Path, service_id: str) -> tuple[list[RecordRow], list[dict[str, Any]]]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{db_path}")
    try:
        names = [f.name for f in fields(RecordRow)]
        rows = await GridStore(engine).records(service_id)
        async with engine.connect() as conn:
            audit = [dict(r._mapping) for r in await conn.execute(select(grid_audit))]
        return [RecordRow(**{n: r[n] for n in names}) for r in rows], audit
    finally:
        await engine.dispose()


def test_headless_demo_connects_the_fleet_activates_fcr_and_prints_delivery(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evflex",
            "demo",
            "--headless",
            "--duration",
            "30",
            "--stations",
            str(STATIONS),
            "--http-port",
            "0",
            "--ocpp-port",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"{STATIONS}/{STATIONS} stations connected and booted" in out
    assert re.findall(r"\d+", figure(out, "stations connected"))[-1] == str(STATIONS)
    assert (tmp_path / "evflex-demo.db").exists()

    # the FCR activation and its figures
    service_id = figure(out, "service id")
    assert re.fullmatch(r"svc-[0-9a-f]{12}", service_id), service_id
    assert re.search(rf"http://127\.0\.0\.1:\d+/api/v1/services/{service_id}/record\.csv", out)
    assert figure(out, "record (CSV)").startswith(f"/api/v1/services/{service_id}/record.csv")
    bid_w = 1000 * number(figure(out, "bid"))
    baseline_w = 1000 * number(figure(out, "baseline"))
    assert 0.2 < bid_w / baseline_w < 0.4, (bid_w, baseline_w)  # 30 % of the charging power
    step = re.search(r"step 50\.0 → 49\.8 Hz at (\S+)", figure(out, "frequency"))
    assert step, out
    step_ts = datetime.fromisoformat(step.group(1)).timestamp()
    at_10 = figure(out, "measured change at 10 s")
    at_end = figure(out, "measured change at end")
    t95 = figure(out, "time to 95 %")
    within = figure(out, "rows within ±5 % of target after full activation")

    # recomputed from the rows the demo stored: the printed figures are the record's
    rows, audit = asyncio.run(stored(tmp_path / "evflex-demo.db", service_id))
    f = delivery_figures(rows, bid_w, step_ts)
    assert f.at_10s_pct is not None and f.at_end_pct is not None
    assert number(at_10) == pytest.approx(f.at_10s_pct, abs=0.2), at_10
    assert number(at_end) == pytest.approx(f.at_end_pct, abs=0.2), at_end
    assert f.span_s >= 15, "the activation should last most of the 30 s run"
    if f.t95_s is None:
        assert t95 == "not reached"
    else:
        assert number(t95) == pytest.approx(f.t95_s, abs=0.1), t95
    if f.within_share is not None:
        assert number(within) == pytest.approx(100 * f.within_share, abs=0.1), within
    # plausible: the fleet followed the step (a dead engine or fleet gives ~0 %)
    assert 30 <= f.at_10s_pct <= 130, at_10
    assert 70 <= f.at_end_pct <= 130, at_end
    # released before exit: ClearChargingProfile for the service's limits
    mine = [a for a in audit if service_id in a["services"].split(",")]
    assert any(a["action"] == "set" for a in mine)
    assert any(a["action"] == "release" and a["reason"] == f"deactivate {service_id}" for a in mine)
