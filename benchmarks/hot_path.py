"""Per-frame CPU cost of the gateway's inbound hot path, without sockets.

Feeds OCPP 1.6 MeterValues frames straight into `Session.on_message` with a
transport stub that only counts bytes, so the figure is parsing + validation +
translation + fleet update (+ the recorder when `--store` is given) + response
encoding. Run: `.venv/bin/python benchmarks/hot_path.py [--store]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

import orjson

from evflex.fleet.model import Protocol
from evflex.fleet.state import FleetState
from evflex.ocpp import v16
from evflex.ocpp.gateway import Gateway


class _Transport:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, msg_type: Any, data: bytes) -> None:
        self.sent += len(data)


class _Directory:
    def credential(self, station_id: str) -> str | None:
        return ""

    def verify(self, station_id: str, password: str) -> bool:
        return True

    def register_unknown(self, station_id: str, password: str | None) -> None:
        pass

    def has_booted(self, station_id: str) -> bool:
        return True

    def authorize(self, station_id: str, id_token: str) -> str:
        return "Accepted"

    def allocate_transaction_id(self) -> int:
        return 1


def _frame(i: int) -> bytes:
    return orjson.dumps(
        [
            2,
            str(i),
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": 7,
                "meterValue": [
                    {
                        "timestamp": "2026-11-22T10:00:00.000Z",
                        "sampledValue": [
                            {
                                "value": str(7000 + i % 100),
                                "measurand": "Power.Active.Import",
                                "unit": "W",
                            },
                            {
                                "value": str(100000 + i),
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "Wh",
                            },
                        ],
                    }
                ],
            },
        ]
    )


async def run(n: int, stations: int, with_store: bool) -> float:
    fleet = FleetState()
    sinks: list[Any] = [fleet.apply]
    recorder = None
    if with_store:
        from evflex.store import db
        from evflex.store.writer import EventRecorder

        url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
        db.upgrade(url)
        recorder = EventRecorder(db.create_engine(url), flush_interval_s=10)
        sinks.append(recorder)

    def sink(event: Any) -> None:
        for s in sinks:
            s(event)

    gateway = Gateway(_Directory(), sink)
    sessions = []
    for k in range(stations):
        session = v16_session(gateway, f"CP{k}")
        sessions.append(session)
    frames = [_frame(i) for i in range(1000)]
    started = time.perf_counter()
    for i in range(n):
        sessions[i % stations].on_message(frames[i % 1000])
    elapsed = time.perf_counter() - started
    if recorder is not None:
        recorder.stats  # noqa: B018 - keep the rows: the write itself is measured elsewhere
    return elapsed / n * 1e6


def v16_session(gateway: Gateway, station_id: str) -> Any:
    from evflex.ocpp.session import Session

    session = Session(gateway, station_id, Protocol.OCPP16, v16.HANDLERS)
    session.transport = _Transport()  # type: ignore[assignment]
    return session


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--stations", type=int, default=5000)
    parser.add_argument("--store", action="store_true")
    args = parser.parse_args()
    runs = [asyncio.run(run(args.n, args.stations, args.store)) for _ in range(3)]
    print(
        f"hot path, 1.6 MeterValues, {args.stations} stations, store={args.store}: "
        f"median {statistics.median(runs):.1f} µs/frame (runs: "
        f"{', '.join(f'{r:.1f}' for r in runs)})"
    )


if __name__ == "__main__":
    main()
