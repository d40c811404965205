"""The command line as an operator uses it: real subprocesses, a temp database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from evflex.store import db
from evflex.store.repository import Repository


def _evflex(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evflex", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_token_create_prints_a_working_token_last(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    proc = _evflex("token", "create", "--role", "admin", "--db", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip().splitlines()[-1]

    async def role() -> str | None:
        engine = db.create_engine(url)
        try:
            return await Repository(engine).verify_token(token)
        finally:
            await engine.dispose()

    assert asyncio.run(role()) == "admin"


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/up.db"
    proc = _evflex("db", "upgrade", "--db", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "up.db").stat().st_size > 0


def test_config_show_reflects_toml_and_environment(tmp_path: Path) -> None:
    (tmp_path / "evflex.toml").write_text("http_port = 9999\ncall_timeout_s = 12.5\n")
    proc = _evflex("config", "show", cwd=tmp_path, env={"EVFLEX_HTTP_PORT": "7777"})
    assert proc.returncode == 0, proc.stderr
    lines = {
        line.split("│")[1].strip(): line
        for line in proc.stdout.splitlines()
        if line.count("│") >= 3
    }
    assert "7777" in lines["http_port"]  # environment beats the file
    assert "12.5" in lines["call_timeout_s"]  # the file beats the default
    assert "8180" in lines["ocpp_port"]  # default


def test_invalid_settings_are_refused_with_a_reason(tmp_path: Path) -> None:
    proc = _evflex("config", "show", cwd=tmp_path, env={"EVFLEX_OCPP_PORT": "notaport"})
    assert proc.returncode == 2
    assert "invalid settings" in proc.stderr
