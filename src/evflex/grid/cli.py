"""`evflex grid step | replay`: feed frequency to a running server's API.

Both post to `POST /api/v1/grid/frequency`. Samples are stamped with the time they
are sent (a replay keeps the recorded spacing, divided by `--speed`), so the same
file can be replayed again without being rejected as old.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from evflex.grid.replay import parse_csv
from evflex.grid.samples import paced

grid_app = typer.Typer(
    help="Grid frequency: step and replay against a running server.", no_args_is_help=True
)
console = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option(help="the running server's API", envvar="EVFLEX_URL")]
TokenOpt = Annotated[
    str | None, typer.Option(help="API token [env EVFLEX_TOKEN]", envvar="EVFLEX_TOKEN")
]
DEFAULT_URL = "http://127.0.0.1:8080"


def _client(url: str, token: str | None) -> httpx.AsyncClient:
    if token is None:
        console.print("[red]an API token is needed:[/red] --token or EVFLEX_TOKEN")
        raise typer.Exit(2)
    return httpx.AsyncClient(
        base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


async def _post(client: httpx.AsyncClient, hz: float) -> None:
    body = {"hz": hz, "ts": datetime.now(UTC).isoformat()}
    try:
        r = await client.post("/api/v1/grid/frequency", json=body)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {client.base_url}:[/red] {exc}")
        raise typer.Exit(1) from None
    if r.status_code != 200:
        console.print(f"[red]{r.status_code}:[/red] {r.text}")
        raise typer.Exit(1)


@grid_app.command("step")
def step(
    to: Annotated[float, typer.Option("--to", help="frequency to hold, Hz")],
    hold_s: Annotated[
        float, typer.Option("--hold", help="keep posting 1 sample/s for this long (s)")
    ] = 0.0,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Post a frequency step: 3 samples at once (the feed needs 3 good ones), then hold.

    Without `--hold` the feed goes stale after the server's stale time and the
    engine releases the fleet: hold for as long as the step should last.
    """

    async def run() -> None:
        async with _client(url, token) as client:
            for _ in range(3):
                await _post(client, to)
                await asyncio.sleep(0.01)  # distinct timestamps
            deadline = time.monotonic() + hold_s
            while time.monotonic() < deadline:
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                await _post(client, to)

    asyncio.run(run())
    console.print(f"posted {to} Hz" + (f", held {hold_s:g} s" if hold_s else ""))


@grid_app.command("replay")
def replay(
    file: Annotated[Path, typer.Argument(help="CSV of `ts,hz` (epoch s or ISO 8601)")],
    speed: Annotated[float, typer.Option(help="× real time (≤ 0: as fast as possible)")] = 1.0,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Replay a recorded frequency file at `--speed` × real time."""
    try:
        samples = list(parse_csv(file.read_text(encoding="utf-8").splitlines()))
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read {file}:[/red] {exc}")
        raise typer.Exit(2) from None

    async def run() -> int:
        n = 0
        async with _client(url, token) as client:
            async for sample in paced(samples, speed):
                await _post(client, sample.freq_hz)
                n += 1
        return n

    sent = asyncio.run(run())
    console.print(f"replayed {sent} samples from {file}")
