"""Grid services as pure functions: a signal → portfolio change ΔP (W) vs the baseline.

Sign convention (all of evflex): positive ΔP = more consumption (import), negative =
less consumption or more injection. Low frequency → negative ΔP.

The FFR state machine lives in `ffr.py`; this module holds the stateless services.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

from evflex.grid.health import FeedHealth
from evflex.grid.samples import NOMINAL_HZ


def fcr_delta_w(
    freq_hz: float,
    bid_w: float,
    *,
    f0_hz: float = NOMINAL_HZ,
    deadband_hz: float = 0.010,
    full_dev_hz: float = 0.200,
) -> float:
    """Symmetric FCR droop (CE: linear to full activation at ±200 mHz, 10 mHz deadband).

    TSO texts write the response as injection: ΔP_inj = −P_bid·clamp((f − f0)/Δf_full, −1, 1).
    In evflex's load convention that is ΔP = +P_bid·clamp((f − f0)/Δf_full, −1, 1):
    at 49.8 Hz the fleet consumes P_bid less, at 50.2 Hz P_bid more. ΔP = 0 while
    |f − f0| ≤ deadband; outside it the response is proportional to the full
    deviation (not to the deviation beyond the deadband), as in CE FCR.
    f, f0, deadband, Δf_full in Hz; P_bid and ΔP in W.
    """
    dev = freq_hz - f0_hz
    if abs(dev) <= deadband_hz:
        return 0.0
    return bid_w * max(-1.0, min(1.0, dev / full_dev_hz))


def frequency_gate(health: FeedHealth, delta_w: float | None) -> float | None:
    """A frequency-driven ΔP only while the feed is usable (`health.ok`); else None.

    None is the engine's safe state: no frequency response, limits released to the
    baseline. Acting on a stale or implausible reading could pause a whole fleet on
    a sensor fault, which is worse for the grid than not responding (and the
    unavailability is reported, not hidden).
    """
    return delta_w if health.ok else None


@dataclass(frozen=True, slots=True)
class Setpoint:
    """An absolute portfolio power target (W, load convention) valid in [from, to) (epoch s)."""

    target_w: float
    valid_from_ts: float
    valid_to_ts: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_w) and self.valid_from_ts < self.valid_to_ts):
            raise ValueError("setpoint needs a finite target and valid_from < valid_to")


def active_setpoint(setpoints: Iterable[Setpoint], now: float) -> Setpoint | None:
    """The setpoint in force at `now`: among the valid ones, the latest to start."""
    valid = [s for s in setpoints if s.valid_from_ts <= now < s.valid_to_ts]
    return max(valid, key=lambda s: s.valid_from_ts) if valid else None


def setpoint_delta_w(
    setpoint: Setpoint | None, baseline_total_w: float, now: float
) -> float | None:
    """ΔP = P_target − P_baseline (W) inside the validity window; None outside it.

    None means "no instruction": the engine releases the fleet to its baseline.
    """
    if setpoint is None or not setpoint.valid_from_ts <= now < setpoint.valid_to_ts:
        return None
    return setpoint.target_w - baseline_total_w


@dataclass(frozen=True, slots=True)
class DroopCurve:
    """An FO-supplied piecewise-linear ΔP(f): points (f_hz, ΔP_w), load convention.

    Validated: at least two points, finite, f strictly increasing and inside
    47–53 Hz, and ΔP non-decreasing in f. A falling segment would make the fleet
    consume less as frequency rises, amplifying the deviation, so it is rejected.
    """

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        pts = self.points
        if len(pts) < 2:
            raise ValueError("a droop curve needs at least two points")
        if not all(math.isfinite(f) and math.isfinite(p) and 47.0 <= f <= 53.0 for f, p in pts):
            raise ValueError("droop points must be finite with 47 ≤ f ≤ 53 Hz")
        for (f0, p0), (f1, p1) in itertools.pairwise(pts):
            if f1 <= f0:
                raise ValueError(f"droop frequencies must increase strictly: {f0} then {f1}")
            if p1 < p0:
                raise ValueError(f"ΔP must not fall as f rises ({f0} Hz → {f1} Hz): destabilising")


def droop_delta_w(curve: DroopCurve, freq_hz: float) -> float:
    """ΔP(f) by linear interpolation between the curve's points, flat beyond its ends (W)."""
    pts = curve.points
    i = bisect.bisect_right(pts, freq_hz, key=lambda pt: pt[0])
    if i == 0:
        return pts[0][1]
    if i == len(pts):
        return pts[-1][1]
    (f0, p0), (f1, p1) = pts[i - 1], pts[i]
    return p0 + (p1 - p0) * (freq_hz - f0) / (f1 - f0)
