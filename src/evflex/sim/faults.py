"""Control-path realism: how long a charger takes to apply a limit, and faulty chargers.

Field evidence (../shared/research/grid-requirements.md fact 79): chargers take
seconds, sometimes 30 s, to follow a new profile; some answer Accepted and do
nothing; some reject; some answer late; some drop the connection.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field


class Fault(enum.StrEnum):
    NONE = "none"
    IGNORE = "ignore"  # accepts SetChargingProfile, never applies it
    REJECT = "reject"  # answers Rejected
    SLOW = "slow"  # the CallResult itself comes late
    DROP = "drop"  # closes the connection instead of answering


@dataclass(frozen=True, slots=True)
class DelayModel:
    """Seconds from receiving a profile to drawing the new power: mostly 1–5 s, a tail to 30 s."""

    low_s: float = 1.0
    high_s: float = 5.0
    tail_share: float = 0.05
    tail_max_s: float = 30.0

    def draw(self, rng: random.Random) -> float:
        if self.tail_share > 0 and rng.random() < self.tail_share:
            return rng.uniform(self.high_s, self.tail_max_s)
        return rng.uniform(self.low_s, self.high_s)


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Shares (0–1) of faulty stations per kind of fault; the rest behave."""

    shares: dict[Fault, float] = field(default_factory=dict)
    slow_result_s: tuple[float, float] = (10.0, 45.0)

    def assign(self, rng: random.Random) -> Fault:
        x = rng.random()
        for fault, share in self.shares.items():
            if x < share:
                return fault
            x -= share
        return Fault.NONE


def parse_faults(spec: str) -> dict[Fault, float]:
    """`"ignore:2,reject:1,slow:1,drop:1"` (percent of stations) → shares."""
    shares: dict[Fault, float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, percent = item.partition(":")
        try:
            fault = Fault(name.strip())
            share = float(percent) / 100.0
        except ValueError:
            raise ValueError(f"bad fault spec {item!r}: use NAME:PERCENT") from None
        if fault is Fault.NONE or not 0.0 <= share <= 1.0:
            raise ValueError(f"bad fault spec {item!r}")
        shares[fault] = share
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ValueError("fault shares add up to more than 100 %")
    return shares
