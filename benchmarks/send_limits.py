"""The gateway's Python per station in a fleet-wide grid step, without sockets.

`Gateway.send_limits` over `--stations` idle OCPP 1.6 sessions whose transport only
counts frames: what remains is the pass's own work per station (session lookup, the
shape's template, the spliced frame, the call's bookkeeping). Times a set pass (a
TxProfile limit of 0 W on every station, each with its transaction) and a release
pass (ClearChargingProfile) alternately; prints the median µs per station.

    .venv/bin/python benchmarks/send_limits.py --stations 10000 --cpu 0

In the server the same Python costs roughly twice this per station: between two
stations the kernel's loopback send runs, and the next station's objects are no
longer in the CPU's caches (docs/benchmarks.md, grid services, session 6).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from evflex.fleet.commands import LimitBatch, LimitOrder, LimitOutcome, make_limit_order
from evflex.fleet.model import Protocol
from evflex.ocpp import txids
from evflex.ocpp.gateway import Gateway
from evflex.ocpp.session import Session


class _Transport:
    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames = 0

    def send(self, msg_type: Any, data: bytes) -> None:
        self.frames += 1


class _Directory:
    """Just enough of `Directory` for a `Session` to be built."""

    def has_booted(self, station_id: str) -> bool:
        return True


def _ignore(outcomes: list[LimitOutcome]) -> None:
    return None


async def _run(stations: int, passes: int) -> dict[str, float]:
    gateway = Gateway(_Directory(), lambda event: None)  # type: ignore[arg-type]
    gateway._loop = asyncio.get_running_loop()
    sessions = []
    for i in range(stations):
        session = Session(gateway, f"CP{i:06d}", Protocol.OCPP16, {})
        session.transport = _Transport()  # type: ignore[assignment]
        gateway.sessions[session.station_id] = session
        sessions.append(session)
    sets = [
        make_limit_order((s.station_id, 1, 1001, 0.0, "W", "tx", str(100_000 + i)))
        for i, s in enumerate(sessions)
    ]
    for order in sets:  # as the 1.6 adapter does when each transaction starts
        txids.remember(order.transaction_id or "", True)
    clears = [LimitOrder(s.station_id, 1, 1001, None) for s in sessions]
    per_station: dict[str, list[float]] = {"set": [], "release": []}
    first: dict[str, float] = {}
    for k in range(passes + 1):
        for name, orders in (("set", sets), ("release", clears)):
            now = datetime.now(UTC)
            batch = LimitBatch(8, now, now + timedelta(minutes=15))
            gc.collect()
            started = time.perf_counter()
            done = gateway.send_limits(orders, batch, _ignore, timeout_s=30)
            elapsed = time.perf_counter() - started
            for session in sessions:  # nobody answers: make every station idle again
                session._inflight = None
            done.cancel()
            if k:
                per_station[name].append(elapsed / stations * 1e6)
            else:  # builds the templates: once per step in the server too
                first[name] = elapsed / stations * 1e6
    sent = sum(s.transport.frames for s in sessions)  # type: ignore[union-attr]
    assert sent == 2 * (passes + 1) * stations, sent
    medians = {name: statistics.median(values) for name, values in per_station.items()}
    return {**medians, **{f"first {name}": us for name, us in first.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=15)
    parser.add_argument("--cpu", type=int, default=-1, help="pin to this core (-1: no pinning)")
    args = parser.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    result = asyncio.run(_run(args.stations, args.passes))
    print(
        f"send_limits, {args.stations} idle sessions, median of {args.passes} passes"
        " (and the first pass): "
        + ", ".join(f"{name} {us:.2f} µs/station" for name, us in result.items())
    )


if __name__ == "__main__":
    main()
