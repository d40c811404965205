"""Results: medians across runs, the JSON file, and the table printed to the terminal."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from evflex.bench.runner import Metric, Metrics
from evflex.bench.stats import median

_PACKAGES = ("evflex", "picows", "orjson", "uvloop", "websockets", "fastjsonschema", "sqlalchemy")


def median_metrics(runs: list[Metrics]) -> Metrics:
    """Key-wise median over runs. None (infinite / not reached) sorts above every number;
    text is kept when all runs agree."""
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run if k not in keys)
    out: Metrics = {}
    for key in keys:
        values = [run.get(key) for run in runs]
        out[key] = _median_value(values)
    return out


def _median_value(values: list[Metric]) -> Metric:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers and len(numbers) + values.count(None) == len(values):
        as_float = [float(v) if v is not None else math.inf for v in values]
        m = median(as_float)
        if math.isinf(m):
            return None
        if all(isinstance(v, int) for v in numbers) and m == int(m):
            return int(m)
        return round(m, 3)
    first = values[0]
    return first if all(v == first for v in values) else "varies: " + " / ".join(map(str, values))


def machine() -> dict[str, Any]:
    """The facts needed to compare figures across machines."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gib": _mem_total_gib(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for package in _PACKAGES:
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    return info


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def build_report(
    scenario: str, options: dict[str, Any], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": _command_line(),
        "machine": machine(),
        "options": options,
        "runs": runs,
        "median": median_metrics([r["metrics"] for r in runs]),
    }


def _command_line() -> str:
    """`evflex bench ...` as typed, whether run as `evflex bench` or `python -m evflex.bench`."""
    args = sys.argv[1:]
    if not args or args[0] != "bench":
        args = ["bench", *args]
    return " ".join(["evflex", *args])


def default_path(scenario: str) -> Path:
    return Path("bench-results") / f"{scenario}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return path


def _fmt(value: Metric) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return value


def table(report: dict[str, Any]) -> Table:
    runs: list[dict[str, Any]] = report["runs"]
    t = Table(title=f"evflex bench {report['scenario']}", title_justify="left")
    t.add_column("metric")
    for i in range(len(runs)):
        t.add_column(f"run {i + 1}", justify="right")
    if len(runs) > 1:
        t.add_column("median", justify="right", style="bold")
    for key, value in report["median"].items():
        cells = [_fmt(r["metrics"].get(key)) for r in runs]
        if len(runs) > 1:
            cells.append(_fmt(value))
        t.add_row(key, *cells)
    return t


def profile_table(profile: dict[str, Any], title: str, top: int = 12) -> Table:
    t = Table(title=f"{title}: {profile['samples']:,} samples", title_justify="left")
    t.add_column("self", justify="right")
    t.add_column("function (self)")
    t.add_column("inclusive", justify="right")
    t.add_column("function (inclusive)")
    own, inclusive = profile["self"][:top], profile["inclusive"][:top]
    for i in range(max(len(own), len(inclusive))):
        a = own[i] if i < len(own) else None
        b = inclusive[i] if i < len(inclusive) else None
        t.add_row(
            f"{a['share']:.1%}" if a else "",
            a["function"] if a else "",
            f"{b['share']:.1%}" if b else "",
            b["function"] if b else "",
        )
    return t


def print_report(report: dict[str, Any], console: Console) -> None:
    console.print(table(report))
    for i, run in enumerate(report["runs"], 1):
        for note in run["notes"]:
            console.print(f"[yellow]run {i}:[/yellow] {note}")
        profile = run.get("profile")
        if profile and "error" in profile:
            console.print(f"[yellow]run {i} profile:[/yellow] {profile['error']}")
        elif profile and profile.get("samples"):
            console.print(profile_table(profile, f"run {i} server profile ({profile['file']})"))
            entries = ", ".join(
                f"{e['function']} {e['share']:.0%}" for e in profile.get("by_entry", [])[:6]
            )
            console.print(f"  by entry point: {entries}")
