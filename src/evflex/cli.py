"""Command line: `evflex serve | demo | readiness | sim | bench | token | db | config | ...`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from evflex import logs
from evflex.bench.cli import bench_app
from evflex.config import DEFAULT_DB, Settings, load_settings
from evflex.grid.cli import grid_app
from evflex.sim.cli import sim_app

app = typer.Typer(help="evflex: OCPP central system for grid balancing.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
config_app = typer.Typer(help="Effective settings.", no_args_is_help=True)
stations_app = typer.Typer(help="Station registry.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(stations_app, name="stations")
app.add_typer(sim_app, name="sim")
app.add_typer(bench_app, name="bench")
app.add_typer(grid_app, name="grid")
console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file")]
DbOpt = Annotated[str | None, typer.Option("--db", help=f"database URL [default: {DEFAULT_DB}]")]


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - uvloop is not available on Windows
        asyncio.run(coro)  # type: ignore[arg-type]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address [default: 127.0.0.1]")] = None,
    ocpp_port: Annotated[int | None, typer.Option(help="OCPP port [default: 8180]")] = None,
    http_port: Annotated[int | None, typer.Option(help="REST port [default: 8080]")] = None,
    db: DbOpt = None,
    allow_unknown_stations: Annotated[
        bool | None, typer.Option("--allow-unknown-stations", help="DEVELOPMENT ONLY")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the central system (OCPP gateway + REST API)."""
    from evflex.app import Ports
    from evflex.app import serve as run_server

    settings = _settings(
        config,
        host=host,
        ocpp_port=ocpp_port,
        http_port=http_port,
        db=db,
        allow_unknown_stations=allow_unknown_stations,
    )
    logs.configure(settings.log_level, settings.log_format)

    def ready(ports: Ports) -> None:
        console.print(
            f"evflex serving: OCPP ws://{settings.host}:{ports.ocpp}/ocpp/{{id}}  "
            f"API http://{settings.host}:{ports.http}/docs"
        )

    _run(run_server(settings, ready))


@app.command()
def demo(
    headless: Annotated[bool, typer.Option(help="no live view; exit with a summary")] = False,
    duration: Annotated[
        float | None, typer.Option(help="seconds to run [default: until Ctrl+C]")
    ] = None,
    stations: Annotated[int, typer.Option(help="simulated stations")] = 200,
    http_port: Annotated[int, typer.Option(help="REST port (0 = any free)")] = 8080,
    ocpp_port: Annotated[int, typer.Option(help="OCPP port (0 = any free)")] = 8180,
) -> None:
    """Server + simulated fleet in one process, on embedded defaults (./evflex-demo.db)."""
    from evflex.demo import DemoOptions, run_demo

    logs.configure("WARNING")
    options = DemoOptions(
        stations=stations,
        duration_s=duration if duration else (30.0 if headless else None),
        headless=headless,
        http_port=http_port,
        ocpp_port=ocpp_port,
    )
    summary = asyncio.run(run_demo(options, Console()))
    if summary["stations_connected"] < stations:
        console.print("[red]not every station connected[/red]")
        raise typer.Exit(1)


@app.command()
def readiness(
    url: Annotated[
        str, typer.Option(help="the running server's API", envvar="EVFLEX_URL")
    ] = "http://127.0.0.1:8080",
    token: Annotated[
        str | None, typer.Option(help="API token [env EVFLEX_TOKEN]", envvar="EVFLEX_TOKEN")
    ] = None,
    models: Annotated[
        bool, typer.Option("--models", help="per vendor/model/firmware instead of per station")
    ] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout")] = False,
) -> None:
    """Telemetry readiness (PowerBank rules) per station or per hardware model.

    Asks the running server: readiness is judged from live observation (what each
    station actually reports), which only the server process holds.
    """
    import httpx

    if token is None:
        console.print("[red]an API token is needed:[/red] --token or EVFLEX_TOKEN")
        raise typer.Exit(2)
    path = "/api/v1/readiness/models" if models else "/api/v1/readiness"
    try:
        r = httpx.get(
            url.rstrip("/") + path,
            params={"format": "csv"} if as_csv else None,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {url}:[/red] {exc}")
        raise typer.Exit(1) from None
    if r.status_code != 200:
        console.print(f"[red]{r.status_code}:[/red] {r.text}")
        raise typer.Exit(1)
    if as_csv:
        sys.stdout.write(r.text)
        return
    out = Console()
    out.print(_models_table(r.json()) if models else _readiness_table(r.json()))


def _readiness_table(items: list[dict[str, object]]) -> Table:
    table = Table("station", "verdict", "vendor / model / firmware", "reasons")
    counts: dict[str, int] = {}
    for x in items:
        counts[str(x["verdict"])] = counts.get(str(x["verdict"]), 0) + 1
        hw = " / ".join(str(x.get(k) or "?") for k in ("vendor", "model", "firmware"))
        reasons = x.get("reasons") or []
        assert isinstance(reasons, list)
        table.add_row(str(x["station_id"]), str(x["verdict"]), hw, "\n".join(reasons))
    table.title = "readiness: " + (
        ", ".join(f"{v} {n}" for v, n in sorted(counts.items())) or "no stations"
    )
    return table


def _models_table(items: list[dict[str, object]]) -> Table:
    table = Table(
        "vendor", "model", "firmware", "stations", "ready", "most common reasons",
        title="readiness per hardware model",
    )  # fmt: skip
    for m in items:
        reasons = m.get("top_reasons") or []
        assert isinstance(reasons, list)
        table.add_row(
            str(m.get("vendor") or "?"),
            str(m.get("model") or "?"),
            str(m.get("firmware") or "?"),
            str(m["stations"]),
            f"{float(str(m['share_ready'])):.0%}",
            "\n".join(f"{r['reason']} ({r['stations']})" for r in reasons),
        )
    return table


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="role of the token, e.g. admin")] = "admin",
    name: Annotated[str, typer.Option(help="a label for the token")] = "",
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create an API token; the token is the last line of the output."""
    from evflex.store import db as store_db
    from evflex.store.repository import Repository

    settings = _settings(config, db=db)

    async def create() -> str:
        store_db.upgrade(settings.db)
        engine = store_db.create_engine(settings.db)
        try:
            return await Repository(engine).create_token(role, name)
        finally:
            await engine.dispose()

    token = asyncio.run(create())
    console.print(f"created a {role!r} token (store it now: it is not shown again):")
    sys.stdout.write(token + "\n")


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = None, config: ConfigOpt = None) -> None:
    """Apply database migrations up to the latest."""
    from evflex.store import db as store_db

    settings = _settings(config, db=db)
    store_db.upgrade(settings.db)
    console.print(f"database at {settings.db} is up to date")


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective settings (defaults < TOML file < EVFLEX_* environment)."""
    settings = _settings(config)
    table = Table("setting", "value", "environment variable")
    for name, value in settings.model_dump().items():
        table.add_row(name, str(value), f"EVFLEX_{name.upper()}")
    Console().print(table)


@stations_app.command("add")
def stations_add(
    station_id: Annotated[str, typer.Argument(help="station identity")],
    password: Annotated[str | None, typer.Option(help="16–40 chars; omitted = generated")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Register a station (the server picks it up on restart; prefer the REST API live)."""
    from evflex.fleet.credentials import (
        check_password_policy,
        generate_password,
        hash_password,
    )
    from evflex.store import db as store_db
    from evflex.store.repository import Repository

    settings = _settings(config, db=db)
    secret = password or generate_password()
    check_password_policy(secret)

    async def add() -> None:
        store_db.upgrade(settings.db)
        engine = store_db.create_engine(settings.db)
        try:
            await Repository(engine).add_station(station_id, hash_password(secret))
        finally:
            await engine.dispose()

    asyncio.run(add())
    console.print(f"registered {station_id}")
    if password is None:
        sys.stdout.write(secret + "\n")


def main() -> None:
    app()
