"""`evflex grid step | replay` as subprocesses against a real server on loopback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.api.conftest import Server, running_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(f"sqlite+aiosqlite:///{tmp_path}/evflex.db") as srv:
        yield srv


async def settled(server: Server, condition: Callable[[], bool]) -> None:
    """Wait (≤ 5 s) until the engine has consumed the posted samples: `condition`."""
    evaluated = asyncio.Event()
    server.app.grid.listeners.append(evaluated.set)
    async with asyncio.timeout(5):
        while not condition():
            evaluated.clear()
            await evaluated.wait()


async def evflex(server: Server, *args: str, token: bool = True) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EVFLEX_TOKEN", "EVFLEX_URL")}
    auth = ["--token", server.token] if token else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "evflex", "grid", *args,
        "--url", f"http://127.0.0.1:{server.app.ports.http}", *auth,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_step_makes_the_feed_usable_at_the_new_frequency(server: Server) -> None:
    code, out = await evflex(server, "step", "--to", "49.8")
    assert code == 0, out
    await settled(server, lambda: server.app.grid.health.ok)
    state = (await server.http.get("/api/v1/grid/state")).json()
    assert state["feed"]["ok"] is True
    assert state["frequency_hz"] == pytest.approx(49.8)


async def test_replay_posts_every_sample(server: Server, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    rows = [f"{1_700_000_000 + i * 0.5},{50.0 - i * 0.01:.2f}" for i in range(6)]
    trace.write_text("ts,hz\n" + "\n".join(rows) + "\n", encoding="utf-8")
    code, out = await evflex(server, "replay", str(trace), "--speed", "20")
    assert code == 0, out
    assert "replayed 6 samples" in out
    engine = server.app.grid
    await settled(server, lambda: engine.health.good_streak >= 6)
    assert engine.health.good_streak == 6
    assert engine.health.last is not None and engine.health.last.freq_hz == pytest.approx(49.95)


async def test_step_without_a_token_or_with_implausible_hz_fails(server: Server) -> None:
    code, out = await evflex(server, "step", "--to", "49.8", token=False)
    assert code == 2 and "token" in out
    code, out = await evflex(server, "step", "--to", "60")
    assert code == 1 and "422" in out
