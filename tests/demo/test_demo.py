"""`evflex demo --headless` end to end, as a newcomer runs it (a subprocess, real sockets)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_headless_demo_connects_the_fleet_and_prints_a_summary(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evflex",
            "demo",
            "--headless",
            "--duration",
            "8",
            "--stations",
            "40",
            "--http-port",
            "0",
            "--ocpp-port",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "40/40 stations connected and booted" in out
    row = next(line for line in out.splitlines() if "stations connected" in line)
    assert re.findall(r"\d+", row)[-1] == "40", row
    assert (tmp_path / "evflex-demo.db").exists()
