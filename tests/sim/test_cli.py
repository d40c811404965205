"""`evflex sim` as a typer app: option validation, and a short run against the stub."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from typer.testing import CliRunner

from evflex.sim.cli import sim_app
from tests.sim.csms_stub import CsmsStub


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(sim_app, ["--help"])
    assert result.exit_code == 0
    for option in ("--csms", "--stations", "--mix", "--seed", "--password", "--speed",
                   "--sessions", "--faults"):  # fmt: skip
        assert option in result.output


def test_bad_options_exit_2() -> None:
    runner = CliRunner()
    assert runner.invoke(sim_app, ["--mix", "ac99:1"]).exit_code == 2
    assert runner.invoke(sim_app, ["--faults", "explode:5"]).exit_code == 2
    assert runner.invoke(sim_app, ["--profile", "moon"]).exit_code == 2


async def test_a_short_run_reports_json_figures(stub: CsmsStub) -> None:
    args = [
        "--csms", f"ws://127.0.0.1:{stub.port}/ocpp", "--stations", "4", "--seed", "5",
        "--mix", "ac16:1,ac201:1", "--sessions", "all", "--meter-interval", "1",
        "--password", "cli-password-123456", "--duration", "3", "--report-every", "1", "--json",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from evflex.sim.cli import sim_app; sim_app()", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert len(lines) >= 2
    final = lines[-1]
    assert final["stations"] == 4 and final["booted"] == 4 and final["sent"] > 8
    assert set(stub.calls) == {f"SIM-0000{i}" for i in range(1, 5)}
    assert not stub.errors
