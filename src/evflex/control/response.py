"""Closed loop per unit: did an accepted limit actually move the EVSE?

"Accepted" is not delivery: chargers apply a limit 1–5 s after accepting it, a few
take 30 s, and some never do (../shared/research/grid-requirements.md). So every
accepted *reduction* becomes an `Expectation`: by `due_at` the unit's measured power
must be at or below the limit (plus a tolerance). A unit that is not is
*non-responding*: the engine stops counting on it and lets the others compensate.

Only reductions are checked: a limit cannot make a car draw more than it wants, so a
raise that is not followed says nothing about the charger.

How long to wait is per hardware model (vendor/model/firmware): `expected_delay_s`
starts from a configured default and, once enough responses of that model have been
observed, becomes their 90th percentile plus a margin — a fleet of quick chargers is
judged quickly, so compensation starts seconds earlier.

Pure functions and small value types; the engine holds the state.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["pending", "moved", "late"]


@dataclass(frozen=True, slots=True)
class ResponseParams:
    default_delay_s: float = 6.0  # wait this long for a model we have not observed yet (s)
    min_delay_s: float = 3.0  # never judge sooner: reports take ~1 s to arrive (s)
    max_delay_s: float = 15.0  # never wait longer than this for any model (s)
    margin_s: float = 1.5  # added to the observed p90: report latency and tick (s)
    min_observations: int = 20  # before the observed p90 replaces the default
    tolerance_w: float = 300.0  # a unit within this of its limit has moved (W)
    tolerance_share: float = 0.05  # ... or within this share of its pre-limit power
    hold_s: float = 900.0  # a non-responding unit is left alone this long, then retried (s)


@dataclass(frozen=True, slots=True)
class Expectation:
    """An accepted reduction: from `from_w` to at most `limit_w` by `due_at` (monotonic s)."""

    limit_w: float
    from_w: float
    accepted_at: float
    due_at: float
    model: str
    tolerance_w: float = 0.0  # tolerance_w(from_w, params), kept for the hot check


def tolerance_w(from_w: float, p: ResponseParams) -> float:
    return max(p.tolerance_w, p.tolerance_share * abs(from_w))


def needs_check(limit_w: float, from_w: float, p: ResponseParams) -> bool:
    """Only reductions larger than the tolerance can be told apart from noise."""
    return from_w - limit_w > tolerance_w(from_w, p)


def has_moved(exp: Expectation, power_w: float, p: ResponseParams) -> bool:
    return power_w <= exp.limit_w + (exp.tolerance_w or tolerance_w(exp.from_w, p))


def judge(exp: Expectation, power_w: float, now: float, p: ResponseParams) -> Verdict:
    """`moved` as soon as the power is at the limit; `late` once due and still above it.

    The latest known power is used whatever its age: a station provisioned for delta
    reporting (issue 4) reports any change > 100 W within a second, so silence after
    the due time means "did not move" — and a station that cannot report changes is
    not grid-ready anyway.
    """
    if has_moved(exp, power_w, p):
        return "moved"
    return "late" if now >= exp.due_at else "pending"


@dataclass(slots=True)
class ModelResponse:
    """What one hardware model did with evflex's limits (reported with readiness)."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0  # no answer, timeout, station offline
    fallbacks: dict[str, int] = field(default_factory=dict)  # variant → accepted after fallback
    moved: int = 0
    non_responding: int = 0
    late_moves: int = 0  # moved after having been marked non-responding
    delays_s: deque[float] = field(default_factory=lambda: deque(maxlen=500))

    def as_dict(self, p: ResponseParams) -> dict[str, object]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "failed": self.failed,
            "fallbacks": dict(self.fallbacks),
            "moved": self.moved,
            "non_responding": self.non_responding,
            "late_moves": self.late_moves,
            "response_p50_s": percentile(self.delays_s, 0.5),
            "response_p90_s": percentile(self.delays_s, 0.9),
            "expected_delay_s": expected_delay_s(self.delays_s, p),
        }


def percentile(values: deque[float] | list[float], q: float) -> float | None:
    """Nearest-rank percentile (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def expected_delay_s(observed_s: deque[float] | list[float], p: ResponseParams) -> float:
    """How long to wait for a unit of a model: p90 of its observed delays + margin.

    Bounded to [min_delay_s, max_delay_s]; the default until `min_observations`.
    """
    if len(observed_s) < p.min_observations:
        return p.default_delay_s
    p90 = percentile(observed_s, 0.9)
    assert p90 is not None
    return min(p.max_delay_s, max(p.min_delay_s, p90 + p.margin_s))


def model_key(vendor: str | None, model: str | None, firmware: str | None) -> str:
    """The same grouping as the readiness report: vendor/model/firmware."""
    return f"{vendor or '?'}/{model or '?'}/{firmware or '?'}"
