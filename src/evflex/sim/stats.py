"""Fleet-wide counters and the simulator's own cost (messages/s, CPU per station·s)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Stats:
    sent: int = 0
    received: int = 0
    sent_by_action: Counter[str] = field(default_factory=Counter)
    calls_by_action: Counter[str] = field(default_factory=Counter)  # CSMS-initiated
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    call_timeouts: int = 0
    call_errors: int = 0
    queue_drops: int = 0
    profiles_received: int = 0
    ticks: int = 0
    tick_seconds: float = 0.0  # CPU-ish time spent inside the shared tick


@dataclass(slots=True)
class Rates:
    """Per-second figures over the window since the previous `Meter.sample`."""

    seconds: float
    sent_per_s: float
    received_per_s: float
    cpu_share: float  # process CPU time / wall time (1.0 = one core)
    cpu_us_per_station_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "sent_per_s": round(self.sent_per_s, 1),
            "received_per_s": round(self.received_per_s, 1),
            "cpu_share": round(self.cpu_share, 4),
            "cpu_us_per_station_s": round(self.cpu_us_per_station_s, 2),
        }


class Meter:
    """Turns the counters into rates between two samples."""

    __slots__ = ("_cpu", "_received", "_sent", "_wall", "stats")

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self._sent = stats.sent
        self._received = stats.received

    def sample(self, stations: int) -> Rates:
        wall, cpu = time.perf_counter(), time.process_time()
        seconds = max(wall - self._wall, 1e-9)
        used = cpu - self._cpu
        rates = Rates(
            seconds,
            (self.stats.sent - self._sent) / seconds,
            (self.stats.received - self._received) / seconds,
            used / seconds,
            used / seconds / max(stations, 1) * 1e6,
        )
        self._wall, self._cpu = wall, cpu
        self._sent, self._received = self.stats.sent, self.stats.received
        return rates
