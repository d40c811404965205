"""Available flexibility now, and the part of it that holds with 90 % probability.

Model (documented assumptions, kept deliberately simple):

- A unit's capacity c_i (W) is what allocation may take from it right now:
  down c_i = (baseline − floor)⁺ (no departure harm), up c_i = (hi − baseline)⁺.
- Over the next period [now, now + T] a vehicle contributes c_i only if it stays
  the whole period: B_i ~ Bernoulli(q_i), independent across sessions. Arrivals are
  ignored (conservative). Stationary units (BESS) always stay; a vehicle without
  session information has an unknown departure.
- q_i from the departure time D_i:
    declared departure d_i: D_i ~ Normal(d_i, σ²), q_i = 1 − Φ((now + T − d_i)/σ)
      (σ default 30 min: drivers leave around, not at, the time they state);
    unknown departure: memoryless dwell with mean μ, q_i = exp(−T/μ) (μ default 4 h).
- The deliverable capacity X = Σ c_i·B_i has mean m = Σ c_i q_i and variance
  v = Σ c_i² q_i (1 − q_i). P90 is the x with P(X ≥ x) ≥ 0.9:
    "normal" (large fleets, CLT): x = m − 1.2816·√v;
    "cantelli" (any distribution, conservative for small fleets): x = m − 3·√v,
      since P(X ≤ m − k√v) ≤ 1/(1 + k²) = 0.1 for k = 3.
  Both are clipped at 0. Energinet's P90 rule lets stochastic portfolios bid this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from evflex.control.units import Key, SessionInfo, Unit

Z90 = 1.2815515655446004  # Φ⁻¹(0.9)
CANTELLI_K90 = 3.0  # 1/(1 + k²) = 0.1


@dataclass(frozen=True, slots=True)
class Flexibility:
    """Fleet flexibility (W, magnitudes ≥ 0) against the baseline."""

    up_w: float  # more consumption available
    down_w: float  # less consumption / more injection without departure harm
    down_hard_w: float  # down including pauses below departure need


@dataclass(frozen=True, slots=True)
class DepartureModel:
    declared_sigma_s: float = 1800.0
    mean_dwell_s: float = 4 * 3600.0


def flexibility(units: Iterable[Unit]) -> Flexibility:
    """Sum of per-unit headroom: up Σ(hi − b)⁺, down Σ(b − floor)⁺, hard Σ(b − lo)⁺."""
    up = down = hard = 0.0
    for u in units:
        b = u.baseline_w
        up += max(0.0, u.hi_w - b)
        down += max(0.0, b - u.floor_w)
        hard += max(0.0, b - u.lo_w)
    return Flexibility(up, down, hard)


def stay_probability(
    departure_ts: float | None, now: float, period_s: float, model: DepartureModel
) -> float:
    """q = P(departure > now + T) under `model` (see the module docstring)."""
    if departure_ts is None:
        return math.exp(-period_s / model.mean_dwell_s)
    if model.declared_sigma_s <= 0:
        return 1.0 if departure_ts > now + period_s else 0.0
    z = (now + period_s - departure_ts) / model.declared_sigma_s
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def quantile_w(
    contributions: Iterable[tuple[float, float]],
    method: Literal["normal", "cantelli"] = "normal",
) -> float:
    """Lower 10 % quantile of X = Σ c·Bernoulli(q) from (c_w, q) pairs: m − k·√v, ≥ 0."""
    mean = var = 0.0
    for c, q in contributions:
        mean += c * q
        var += c * c * q * (1.0 - q)
    k = Z90 if method == "normal" else CANTELLI_K90
    return max(0.0, mean - k * math.sqrt(var))


def p90_w(
    units: Sequence[Unit],
    sessions: Mapping[Key, SessionInfo],
    now: float,
    period_s: float,
    *,
    direction: Literal["down", "up"] = "down",
    model: DepartureModel = DepartureModel(),
    method: Literal["normal", "cantelli"] = "normal",
) -> float:
    """Flexibility (W) deliverable through [now, now + period_s] with ≥ 90 % probability."""
    pairs = []
    for u in units:
        c = u.baseline_w - u.floor_w if direction == "down" else u.hi_w - u.baseline_w
        if c <= 0.0:
            continue
        session = sessions.get((u.station_id, u.evse_id), SessionInfo())
        q = 1.0 if u.stationary else stay_probability(session.departure_ts, now, period_s, model)
        pairs.append((c, q))
    return quantile_w(pairs, method)
