"""Latency maths: exact percentiles and coordinated-omission correction.

Coordinated omission: a load generator that waits for (or falls behind) a slow
server sends fewer messages exactly when the server is slow, so timing each
message from its *actual* send hides the stall. In the open-loop telemetry
scenario every message has a *scheduled* send time fixed in advance
(`t0 + j * interval`); its latency is measured from that instant, so any delay,
whether in the server or in the loader's own send path, is counted. A message
that is never answered has infinite latency: if more than 1 % are lost, p99 is
reported as infinite rather than hidden.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

NAN = math.nan
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (exact: an observed value).

    The smallest value such that at least p % of the observations are ≤ it.
    """
    if not sorted_values:
        return NAN
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile {p} is outside 0..100")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """A latency distribution in milliseconds. None stands for "infinite" (lost messages)."""

    count: int
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ms(seconds: float) -> float | None:
    # JSON has no infinity; None is what the report prints as "∞ (lost)".
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return round(seconds * 1000.0, 4)


def summarize(seconds: Iterable[float]) -> LatencySummary:
    """Summary of latencies given in seconds; `inf` entries are lost messages."""
    values = sorted(seconds)
    if not values:
        return LatencySummary(0, None, None, None, None, None, None)
    finite = [v for v in values if not math.isinf(v)]
    mean = math.fsum(finite) / len(finite) if len(finite) == len(values) else math.inf
    p50, p90, p99, p999 = (percentile(values, p) for p in PERCENTILES)
    return LatencySummary(
        len(values), _ms(mean), _ms(p50), _ms(p90), _ms(p99), _ms(p999), _ms(values[-1])
    )


@dataclass(frozen=True, slots=True)
class OpenLoopSchedule:
    """Send j is due at `t0 + j * interval` (seconds on the perf_counter clock)."""

    t0: float
    interval: float
    total: int

    def due(self, j: int) -> float:
        return self.t0 + j * self.interval

    def index_at(self, t: float) -> int:
        """The first send index whose scheduled time is ≥ t (clamped to 0..total)."""
        if t <= self.t0:
            return 0
        return min(self.total, math.ceil((t - self.t0) / self.interval))


@dataclass(frozen=True, slots=True)
class OpenLoopLatencies:
    """Per-message latencies of the sends scheduled inside a measurement window."""

    corrected: list[float]  # ack − scheduled; inf when never acknowledged
    service: list[float]  # ack − actual send (what a naive loader reports)
    send_lag: list[float]  # actual send − scheduled (the loader's own lateness)
    scheduled: int
    acked: int
    unsent: int  # due in the window but never sent (loader stopped or socket gone)


def open_loop_latencies(
    schedule: OpenLoopSchedule,
    sent_at: Sequence[float],
    acked_at: Sequence[float],
    window: tuple[float, float],
) -> OpenLoopLatencies:
    """Latencies of the sends *scheduled* in `[window[0], window[1])`.

    `sent_at[j]` / `acked_at[j]` are perf_counter times, NaN when it did not happen.
    Selecting by scheduled time (not by send or ack time) keeps a stalled server
    from pushing its slow answers out of the window.
    """
    first = schedule.index_at(window[0])
    last = schedule.index_at(window[1])
    corrected: list[float] = []
    service: list[float] = []
    lag: list[float] = []
    unsent = 0
    for j in range(first, last):
        due = schedule.due(j)
        sent, acked = sent_at[j], acked_at[j]
        if math.isnan(sent):
            unsent += 1
            corrected.append(math.inf)
            continue
        lag.append(sent - due)
        if math.isnan(acked):
            corrected.append(math.inf)
            continue
        corrected.append(acked - due)
        service.append(acked - sent)
    return OpenLoopLatencies(corrected, service, lag, last - first, len(service), unsent)


def nan_array(n: int) -> array[float]:
    """A float64 array of n NaNs: one slot per scheduled message, filled when it happens."""
    return array("d", [NAN]) * n


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (mean of the middle two for an even count)."""
    if not values:
        raise ValueError("median of an empty sequence")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2.0


@dataclass(frozen=True, slots=True)
class Stall:
    """A stretch of consecutive scheduled sends all answered later than a threshold."""

    start: float  # scheduled time of the first late send
    end: float  # scheduled time of the last one
    peak: float  # worst latency in it (inf if a message was lost)


def stalls(
    schedule: OpenLoopSchedule,
    acked_at: Sequence[float],
    window: tuple[float, float],
    threshold: float,
    gap: float = 0.05,
) -> list[Stall]:
    """Episodes in which the server answered late, to tell a periodic pause (a
    collector, a flush) from uniform slowness. Late sends less than `gap` apart
    belong to the same episode."""
    episodes: list[Stall] = []
    first = schedule.index_at(window[0])
    last = schedule.index_at(window[1])
    start = end = peak = math.nan
    for j in range(first, last):
        due = schedule.due(j)
        acked = acked_at[j]
        latency = math.inf if math.isnan(acked) else acked - due
        if latency <= threshold:
            continue
        if not math.isnan(end) and due - end <= gap:
            end, peak = due, max(peak, latency)
            continue
        if not math.isnan(end):
            episodes.append(Stall(start, end, peak))
        start = end = due
        peak = latency
    if not math.isnan(end):
        episodes.append(Stall(start, end, peak))
    return episodes
