"""CPU cost of one grid-service evaluation for a 10,000-EVSE fleet.

Stages, each timed separately over a synthetic frequency trace (FCR droop with a bid
of 30 % of fleet power, so the allocation moves thousands of units):

- units:    `units_from_fleet` (fleet state → unit descriptors; once per fleet-view refresh)
- prepare:  `prepare` (the O(n log n) ordering; once per unit refresh / rotation epoch)
- evaluate: `fcr_delta_w` + `allocate` + Minimal `commands` against the limits in force
- full:     prepare + evaluate (the figure when the fleet view changes on every sample)
- cold:     evaluate from no limits at all to a 60 % reduction (worst case: all commands new)

Run: `.venv/bin/python benchmarks/control_eval.py [--evses 10000] [--samples 300]`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from evflex.control.allocation import allocate, apply_commands, commands, evaluate, prepare
from evflex.control.services import fcr_delta_w
from evflex.control.units import BessSpec, EvseSpec, SessionInfo, units_from_fleet
from evflex.fleet.model import Evse, EvseStatus, Station, Transaction
from evflex.fleet.state import FleetState
from evflex.grid.synthetic import trace

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def build_fleet(n_evses: int, seed: int = 1) -> tuple[FleetState, dict, dict]:  # type: ignore[type-arg]
    rng = random.Random(seed)
    fleet, specs, sessions = FleetState(), {}, {}
    now = NOW.timestamp()
    for k in range(n_evses):
        sid, eid = f"cs{k // 2:05d}", 1 + k % 2
        station = fleet.stations.setdefault(sid, Station(sid, connected=True))
        kind = rng.random()
        power = rng.choice([0.0, 4140.0, 7400.0, 11040.0])
        if kind < 0.01:  # BESS
            specs[(sid, eid)] = EvseSpec(bess=BessSpec(200_000, 100_000, 100_000))
            station.evses[eid] = Evse(eid, EvseStatus.CHARGING, power_w=0.0, soc_pct=50.0)
            continue
        if kind < 0.11:  # DC V2G
            specs[(sid, eid)] = EvseSpec(max_w=11_000, ac=False, max_discharge_w=10_000)
        tx = Transaction(f"{sid}-{eid}", eid, NOW)
        station.evses[eid] = Evse(
            eid, EvseStatus.CHARGING, power_w=power, soc_pct=60.0, transaction=tx
        )
        sessions[(sid, eid)] = SessionInfo(
            departure_ts=now + rng.uniform(600, 10 * 3600),
            energy_need_wh=rng.uniform(0, 40_000),
            battery_wh=60_000,
            v2g=kind < 0.11,
            opt_out=rng.random() < 0.02,
        )
    fleet.reset_aggregates()
    return fleet, specs, sessions


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def report(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    print(f"{name:9s} median {statistics.median(ms):7.3f} ms   p99 {p99:7.3f} ms   n={len(ms)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--evses", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()
    fleet, specs, sessions = build_fleet(args.evses)
    now = NOW.timestamp()
    units = units_from_fleet(fleet, {}, specs, sessions, now)
    total = sum(u.baseline_w for u in units)
    bid = 0.3 * total
    print(f"{args.evses} EVSEs, {len(units)} units, fleet {total / 1e6:.1f} MW,", end=" ")
    print(f"FCR bid {bid / 1e6:.1f} MW")
    report("units", timed(lambda: units_from_fleet(fleet, {}, specs, sessions, now), 20))
    report("prepare", timed(lambda: prepare(units, 7), 50))

    plan = prepare(units, 7)
    freqs = [s.freq_hz for s in trace(((0.0, 49.92),), args.samples, sigma_hz=0.03, seed=3)]
    current: dict[tuple[str, int], float] = {}
    eval_ms, full_ms, sent = [], [], 0
    for f in freqs:
        t = time.perf_counter()
        cmds = evaluate(plan, fcr_delta_w(f, bid), current)
        eval_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        commands(prepare(units, 7), allocate(plan, fcr_delta_w(f, bid)), current)
        full_ms.append((time.perf_counter() - t) * 1e3)
        current = apply_commands(current, cmds)
        sent += len(cmds)
    report("evaluate", eval_ms)
    report("full", full_ms)
    report("cold", timed(lambda: evaluate(plan, -0.6 * total, {}), 50))
    print(f"commands per sample: {sent / len(freqs):.1f} (limits in force at end: {len(current)})")


if __name__ == "__main__":
    main()
